"""Sweep helpers on their own: warming the joblib launcher's workers and letting them go (real
loky processes), importing the register run's modules in the background, counting a grid's
jobs against the runs they left in a real store."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time

import psutil
import pytest
from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
from joblib import Parallel, delayed
from omegaconf import OmegaConf

from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine.sweep import (
    SWEEP_SUMMARY,
    WARM_MODULES,
    SweepRun,
    grid_jobs,
    import_in_background,
    release_joblib_workers,
    summarize_sweep,
    warm_joblib_workers,
    warm_modules,
)
from mlflow_pipeline.engine.warm import HURRY_FILE, import_modules
from mlflow_pipeline.tags import MLflow, Runs, Sweep

# conf/hydra/launcher/parallel.yaml as Hydra composes it (hydra_joblib_launcher's defaults).
JOBLIB = {
    "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "n_jobs": 2,
    "backend": None,
    "prefer": "processes",
    "require": None,
    "verbose": 0,
    "timeout": None,
    "pre_dispatch": "2*n_jobs",
    "batch_size": "auto",
    "temp_folder": None,
    "max_nbytes": None,
    "mmap_mode": "r",
}


def test_warm_modules_are_the_stages_targets_and_the_jobs_imports():
    modules = warm_modules(load_config(["model=random_forest", "features=standard"]))
    assert modules[: len(WARM_MODULES)] == list(WARM_MODULES)
    assert {"mlflow_pipeline.stages.train", "mlflow_pipeline.stages.evaluate"} <= set(modules)
    assert {"sklearn.ensemble", "sklearn.preprocessing", "sklearn.impute"} <= set(modules)


def _imported(name: str) -> tuple[int, bool]:
    return os.getpid(), name in sys.modules


def test_the_launchers_parallel_reuses_the_warmed_workers(tmp_path, monkeypatch):
    # The sweep waits until every worker has taken its warm-up task, not until the warm-up is
    # done: the launcher's Parallel comes while the workers still import (here a module that
    # takes two seconds), and its jobs queue behind the warm-up.
    (tmp_path / "slow_to_import.py").write_text("import time\ntime.sleep(2.0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    release_joblib_workers()  # new workers, which start with this sys.path
    modules = ["json", "slow_to_import", "no_such_module"]
    warming = warm_joblib_workers(OmegaConf.create(JOBLIB), modules)
    assert warming is not None
    warming.wait_started()
    assert warming.thread.is_alive()
    # What hydra_joblib_launcher._core.launch then does with the same launcher config.
    joblib_cfg = {k: v for k, v in JOBLIB.items() if k != "_target_"}
    joblib_cfg["backend"] = "loky"
    process_joblib_cfg(joblib_cfg)
    ran = Parallel(**joblib_cfg)(delayed(_imported)("slow_to_import") for _ in range(8))
    warmed = set(warming.join())
    assert warmed
    assert os.getpid() not in warmed
    assert {pid for pid, _ in ran} <= warmed  # the warm workers, not new ones
    assert all(imported for _, imported in ran)  # after their warm-up


def test_a_ctrl_c_in_the_warming_workers_ends_the_warm_up_without_a_traceback(
    tmp_path, monkeypatch
):
    # The sweep no longer waits for the warm-up, so a Ctrl-C (which the workers get too) can
    # land in it while the sweeper composes the jobs: the thread must not print a traceback.
    (tmp_path / "interrupted_import.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    release_joblib_workers()  # new workers, which start with this sys.path
    uncaught: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: uncaught.append(args.exc_value))
    warming = warm_joblib_workers(OmegaConf.create(JOBLIB), ["interrupted_import"])
    assert warming is not None
    assert warming.join() == []
    assert uncaught == []
    release_joblib_workers()


def test_other_launchers_are_not_warmed():
    basic = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
    assert warm_joblib_workers(OmegaConf.create(basic), ["json"]) is None


def test_released_workers_exit_now_and_a_later_parallel_starts_new_ones():
    joblib_cfg = {k: v for k, v in JOBLIB.items() if k != "_target_"}
    joblib_cfg["backend"] = "loky"
    process_joblib_cfg(joblib_cfg)
    workers = set(Parallel(**joblib_cfg)(delayed(os.getpid)() for _ in range(4)))
    release_joblib_workers()
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in workers], timeout=30)
    assert not alive  # gone while this process goes on, not at its exit
    later = set(Parallel(**joblib_cfg)(delayed(os.getpid)() for _ in range(4)))
    assert later
    assert not later & workers  # new workers


LINUX_NICE = pytest.mark.skipif(
    not hasattr(os, "setpriority") or os.geteuid() != 0,
    reason="a thread's priority is lowered only where it can be restored (Linux, here as root)",
)


@LINUX_NICE
def test_background_imports_load_the_modules_in_a_thread_of_lowest_priority(tmp_path, monkeypatch):
    # A module that records the priority of the thread importing it.
    (tmp_path / "records_priority.py").write_text(
        "import os, threading\n"
        "PRIORITY = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "records_priority", raising=False)
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    import_in_background(["no_such_module", "records_priority"]).thread.join(timeout=30)
    assert sys.modules["records_priority"].PRIORITY == 19
    assert os.getpriority(os.PRIO_PROCESS, 0) == niceness  # this thread's is unchanged


def test_background_imports_wait_for_the_warm_up_unless_hurried(tmp_path, monkeypatch):
    (tmp_path / "after_warm_up.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "after_warm_up", raising=False)
    warm_up_done = threading.Event()
    warm_up = threading.Thread(target=warm_up_done.wait, args=(30,))
    warm_up.start()
    imports = import_in_background(["after_warm_up"], after=warm_up)
    imports.thread.join(0.3)
    assert imports.thread.is_alive()
    assert "after_warm_up" not in sys.modules  # the sweeper composes the jobs meanwhile
    warm_up_done.set()
    imports.thread.join(30)
    assert "after_warm_up" in sys.modules
    # The register run needs the modules before the warm-up is done: it does not wait for it.
    monkeypatch.delitem(sys.modules, "after_warm_up")
    warm_up_done.clear()
    warm_up = threading.Thread(target=warm_up_done.wait, args=(30,))
    warm_up.start()
    imports = import_in_background(["after_warm_up"], after=warm_up)
    imports.hurry()
    assert not imports.thread.is_alive()
    assert warm_up.is_alive()
    assert "after_warm_up" not in sys.modules  # the register run imports it itself
    warm_up_done.set()


@LINUX_NICE
def test_warming_workers_import_at_lowest_priority_until_hurried(tmp_path, monkeypatch):
    # Each module records the priority of the thread importing it; the second one hurries.
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    record = (
        "import os, threading\n"
        "PRIORITY = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
    )
    (tmp_path / "warm_first.py").write_text(record)
    (tmp_path / "warm_hurries.py").write_text(
        record + f"open({str(meeting / HURRY_FILE)!r}, 'w')\n"
    )
    (tmp_path / "warm_last.py").write_text(record)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ["warm_first", "warm_hurries", "warm_last"]
    for name in names:
        monkeypatch.delitem(sys.modules, name, raising=False)
    niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert import_modules(names, str(meeting), workers=1) == os.getpid()
    assert [sys.modules[n].PRIORITY for n in names] == [19, 19, niceness]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == niceness  # restored
    assert (meeting / str(os.getpid())).exists()  # met the others


@LINUX_NICE
def test_hurried_imports_finish_their_module_at_normal_priority_and_stop(tmp_path, monkeypatch):
    # The first module waits for a signal, then records its thread's priority.
    (tmp_path / "waits_for_hurry.py").write_text(
        "import os, threading\n"
        "HURRIED = threading.Event()\n"
        "assert HURRIED.wait(30)\n"
        "PRIORITY = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())\n"
    )
    (tmp_path / "never_imported.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("waits_for_hurry", "never_imported"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    imports = import_in_background(["waits_for_hurry", "never_imported"])
    deadline = time.monotonic() + 30
    while not hasattr(sys.modules.get("waits_for_hurry"), "HURRIED"):
        assert time.monotonic() < deadline, "the background thread never started its import"
        time.sleep(0.01)
    # hurry() puts the import back at normal priority, then waits for the module being
    # imported: it finishes once hurry() has done the first.
    hurrying = threading.Thread(target=imports.hurry)
    hurrying.start()
    deadline = time.monotonic() + 30
    while os.getpriority(os.PRIO_PROCESS, imports.thread.native_id) != 0:
        assert time.monotonic() < deadline, "hurry() never raised the import's priority"
        time.sleep(0.01)
    assert hurrying.is_alive()  # waiting for the import
    sys.modules["waits_for_hurry"].HURRIED.set()
    hurrying.join(30)
    assert not hurrying.is_alive()
    assert not imports.thread.is_alive()
    assert sys.modules["waits_for_hurry"].PRIORITY == 0  # back to normal when hurried
    assert "never_imported" not in sys.modules  # stopped after its current module


def test_a_sweep_callback_pickles_without_its_import_thread():
    sweep = SweepRun()
    sweep.imports = import_in_background([])
    sweep.imports.thread.join(timeout=30)
    copy = pickle.loads(pickle.dumps(sweep))  # what the joblib launcher sends its workers
    assert copy.imports is None
    assert sweep.imports is not None


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _hydra(task: list[str], sweeper: str = BASIC_SWEEPER, params: dict | None = None):
    """The ``hydra`` node of a multirun's config, as Hydra composes it for the callbacks."""
    sweeper_node = {"_target_": sweeper, "params": params}
    return OmegaConf.create({"hydra": {"sweeper": sweeper_node, "overrides": {"task": task}}})


def test_grid_jobs_are_the_basic_sweepers_jobs_as_their_runs_record_them():
    config = _hydra(
        ["model=logistic_regression", "model.C=0.1,1.0", "+data.api_token=s3cret"],
        params={"split.random_state": "1,2"},
    )
    assert grid_jobs(config) == [
        f"split.random_state={seed} model=logistic_regression model.C={c} +data.api_token=***"
        for seed in (1, 2)
        for c in ("0.1", "1.0")
    ]
    # Optuna picks its trials as it goes: not counted.
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert grid_jobs(_hydra(["model.C=0.1,1.0"], sweeper=optuna)) is None
    # A range() the basic sweeper cannot expand either (it fails the sweep itself).
    assert grid_jobs(_hydra(["model.C=interval(0.1,1.0)"])) is None


def test_a_launched_job_without_a_run_is_a_failed_row_of_the_summary(tracking_store):
    client = tracking_store.client()
    cfg = tracking_store.config("model=logistic_regression")
    experiment_id = client.create_experiment("sweeps")
    sweep = client.create_run(experiment_id, tags={Runs.KIND: "sweep"}).info.run_id
    tags = {Runs.KIND: "pipeline", Sweep.ROLE: "job", MLflow.PARENT: sweep}
    job = client.create_run(experiment_id, tags={**tags, Runs.OVERRIDES: "model.C=0.1"})
    client.set_terminated(job.info.run_id, "FINISHED")

    launched = ["model.C=0.1", "model.C=1.0", "model.C=1.0"]
    summary = summarize_sweep(client, sweep, cfg, launched)
    assert [(r["overrides"], r["status"]) for r in summary.rows] == [
        ("model.C=0.1", "FINISHED"),
        ("model.C=1.0", "NO_RUN"),
        ("model.C=1.0", "NO_RUN"),
    ]
    assert client.get_run(sweep).data.metrics["jobs_failed"] == 2
    table = client.download_artifacts(sweep, SWEEP_SUMMARY, str(tracking_store.root))
    assert open(table).read().count("NO_RUN") == 2
