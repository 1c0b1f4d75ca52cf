"""`mlflow-pipeline -m`: a Hydra multirun sweep is one sweep run with a pipeline run per job;
shared stages run once, only the best job is registered; in parallel (joblib) on a brand-new
store, as an Optuna search, and through `mlflow run`."""

from __future__ import annotations

import csv
import io
import re
import subprocess
from pathlib import Path

import pytest

from .helpers import (
    REPO,
    STAGES,
    TIMEOUT_S,
    VENV_BIN,
    Store,
    assert_clean_failure,
    assert_ok,
    assert_stage_run_complete,
    write_classification_csv,
)

pytestmark = pytest.mark.slow

MODEL = "breast_cancer"


def _roles(store: Store, sweep_id: str) -> dict[str, list]:
    roles: dict[str, list] = {}
    for run in store.children(sweep_id):
        roles.setdefault(run.data.tags.get("pipeline.sweep.role"), []).append(run)
    return roles


def _summary(store: Store, sweep_id: str) -> list[dict]:
    path = store.client.download_artifacts(sweep_id, "sweep_summary.csv", str(store.root))
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(io.StringIO(fh.read())))


def _check_sweep(store: Store, jobs: int) -> dict:
    """One FINISHED sweep run; under it one `shared` run (ingest, profile, validate, split),
    ``jobs`` FINISHED job runs that reused the shared stages and did not register, and one
    `register` run that registered the best job's model. Returns the runs by role and the
    summary."""
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FINISHED", sweep.data.tags.get("pipeline.error")
    sweep_id = sweep.info.run_id
    roles = _roles(store, sweep_id)
    assert sorted(roles) == ["job", "register", "shared"]
    assert len(roles["job"]) == jobs
    [shared] = roles["shared"]
    shared_stages = store.stage_runs(shared.info.run_id)
    assert sorted(shared_stages) == ["ingest", "profile", "split", "validate"]
    for job in roles["job"]:
        assert job.info.status == "FINISHED"
        assert job.info.experiment_id == sweep.info.experiment_id
        stages = store.stage_runs(job.info.run_id)
        assert sorted(stages) == sorted(s for s in STAGES if s != "register")
        for name, run in stages.items():
            assert_stage_run_complete(store, run, job.info.run_id)
            if name in shared_stages:  # computed once, by the shared run
                assert run.data.tags["pipeline.cache.status"] == "hit"
                source = run.data.tags["pipeline.cache.source_run"]
                assert source == shared_stages[name].info.run_id
    computed = store.runs(
        "tags.`pipeline.stage` = 'ingest' and tags.`pipeline.cache.status` != 'hit'"
    )
    assert len(computed) == 1

    summary = _summary(store, sweep_id)
    assert len(summary) == jobs
    best = sweep.data.tags["pipeline.sweep.best_run"]
    scores = {row["run_id"]: float(row["roc_auc"]) for row in summary}
    assert scores[best] == max(scores.values())
    assert sweep.data.metrics["best_roc_auc"] == max(scores.values())
    assert [row["run_id"] for row in summary if row["best"] == "True"] == [best]

    [register] = roles["register"]
    assert register.info.status == "FINISHED"
    register_stage = store.stage_runs(register.info.run_id)["register"]
    best_train = store.stage_runs(best)["train"]
    assert register_stage.data.tags["pipeline.upstream.model"] in (
        best_train.info.run_id,
        best_train.data.tags.get("pipeline.cache.source_run"),
    )
    assert store.version_numbers(MODEL) == ["1"]
    assert store.alias(MODEL, "champion") == "1"
    return {"sweep": sweep, "roles": roles, "summary": summary}


def test_sweep_nests_jobs_runs_shared_stages_once_and_registers_the_best(store: Store) -> None:
    # Both models are small at their defaults on 569 rows; a sweep cannot shrink them with one
    # override (max_iter is not a random forest key, a typo the config schema rejects).
    result = store.pipeline("-m", "model=logistic_regression,random_forest")
    assert_ok(result)
    assert (store.root / "multirun").is_dir()
    found = _check_sweep(store, jobs=2)
    models = {
        store.stage_runs(job.info.run_id)["train"].data.params["model.name"]
        for job in found["roles"]["job"]
    }
    assert models == {"logistic_regression", "random_forest"}
    assert "registered breast_cancer v1" in result.stdout + result.stderr


def test_eight_jobs_four_in_parallel_on_a_brand_new_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "new")
    store.root.mkdir()
    assert not (store.root / "mlflow.db").exists()
    result = store.pipeline(
        "-m",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=4",
        "model=logistic_regression",
        "model.C=0.01,0.03,0.1,0.3,1.0,3.0,10.0,30.0",
    )
    assert_ok(result)
    assert "Error" not in result.stderr.replace("UserWarning", "")
    found = _check_sweep(store, jobs=8)
    assert (
        "hydra_plugins.hydra_joblib_launcher" in found["sweep"].data.tags["pipeline.sweep.launcher"]
    )
    pids = {job.data.tags["pipeline.pid"] for job in found["roles"]["job"]}
    assert len(pids) > 1  # the jobs ran in several processes
    # ... the workers started (and importing) while the shared stages ran: the launcher's own
    # Parallel reused them rather than starting new ones.
    warmed = re.search(
        r"joblib workers started and warmed in [\d.]+ s: pids ([\d, ]+)", result.stdout
    )
    assert warmed, result.stdout
    assert pids & set(warmed.group(1).split(", ")), (pids, warmed.group(0))
    # The register run after the jobs is in the CLI's process, which imported its modules
    # during the jobs (in the background; done, or hurried and waited for, before it starts).
    lines = result.stdout.splitlines()
    imported = [i for i, s in enumerate(lines) if "for the register run imported in the" in s]
    register = [i for i, s in enumerate(lines) if "stage register: " in s]
    assert len(imported) == 1, result.stdout
    assert register, result.stdout
    assert imported[0] < register[0], result.stdout
    # Their lines interleave: each job's log lines say whose they are (train runs in jobs only).
    train_lines = [s for s in result.stdout.splitlines() if ": stage train: cache " in s]
    assert len(train_lines) == 8, result.stdout
    jobs = [re.match(r"\[job (\d+)\] \d{4}-", line) for line in train_lines]
    assert all(jobs), train_lines
    assert sorted(int(job.group(1)) for job in jobs) == list(range(8))
    assert store.runs("attributes.status != 'FINISHED'") == []


def test_optuna_search_registers_its_best_trial(store: Store) -> None:
    result = store.pipeline("-m", "search=logistic_regression", "hydra.sweeper.n_trials=3")
    assert_ok(result)
    found = _check_sweep(store, jobs=3)
    assert "OptunaSweeper" in found["sweep"].data.tags["pipeline.sweep.sweeper"]
    tried = {row["overrides"] for row in found["summary"]}
    assert len(tried) == 3
    assert all("model.C=" in overrides for overrides in tried)


def test_a_search_whose_trials_fail_records_them_and_ends_with_the_count(store: Store) -> None:
    # No trial can meet this threshold. A failed trial's NaN had made Optuna's sweeper raise
    # at the first one (a traceback, no summary), and a search with no finished trial has no
    # best trial to report.
    result = store.pipeline(
        "-m",
        "search=logistic_regression",
        "hydra.sweeper.n_trials=2",
        "+evaluation.thresholds.f1.min=2.0",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "2 sweep job(s) failed" in result.stderr
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FAILED"
    assert [row["status"] for row in _summary(store, sweep.info.run_id)] == ["FAILED", "FAILED"]
    assert store.version_numbers(MODEL) == []


def test_a_sweep_whose_best_job_cannot_be_registered_exits_1(store: Store) -> None:
    # Every job runs (they do not register); the register run of the best job fails. The
    # sweep had exited 0 (and `mlflow run` had reported it succeeded).
    result = store.pipeline(
        "-m", "model=logistic_regression", "model.C=0.1,1", "registry.model_name=a:b"
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "mlflow-pipeline: error: sweep: cannot read the aliases of 'a:b'" in result.stderr
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FAILED"
    assert "a:b" in sweep.data.tags["pipeline.error"]


def test_a_sweep_through_mlflow_run_nests_under_the_run_it_made(store: Store) -> None:
    result = store.mlflow_run(
        REPO,
        hydra_options="-m model=logistic_regression model.C=0.1,1.0",
        experiment_name=MODEL,
    )
    assert_ok(result)
    found = _check_sweep(store, jobs=2)
    # The sweep run is the one `mlflow run` created (an MLflow project run).
    assert found["sweep"].data.tags["mlflow.source.type"] == "PROJECT"


def test_sweep_with_a_job_that_does_not_compose_fails_cleanly(store: Store) -> None:
    # max_iter is a logistic regression key, not a random forest one: job 2 cannot compose.
    result = store.pipeline("-m", "model=logistic_regression,random_forest", "model.max_iter=30")
    assert_clean_failure(result, "model.max_iter", "RandomForestConfig")

    # Whatever ran, no run is left RUNNING (a sweep run would show as live in the UI forever).
    assert [r.info.run_name for r in store.runs() if r.info.status == "RUNNING"] == []
    assert all(r.info.status == "FAILED" for r in store.runs_of_kind("sweep"))


def test_a_failed_job_fails_the_sweep_but_the_others_run(store: Store) -> None:
    result = store.pipeline(
        "-m", "model=logistic_regression", "model.C=0.1,1.0", "+evaluation.thresholds.f1.min=2.0"
    )
    assert result.returncode == 1
    assert "2 sweep job(s) failed" in result.stderr
    # Each job's error says whose it is, and the summary shows the scores it failed on.
    for job in (0, 1):
        assert f"[job {job}] mlflow-pipeline: error: [evaluate] " in result.stderr
    summary = result.stdout + result.stderr
    assert (
        len(re.findall(r"FAILED roc_auc=0\.\d+ model=logistic_regression model\.C=", summary)) == 2
    )
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FAILED"
    assert store.version_numbers(MODEL) == []  # no passing job: nothing registered


def test_a_job_failing_before_its_pipeline_run_is_recorded_and_fails_the_sweep(
    store: Store,
) -> None:
    # Job 1 names a stage the pipeline does not have: it stops before its pipeline run starts.
    # It had left no run and the sweep ended FINISHED, exit 0, with one job fewer.
    result = store.pipeline("-m", "model=logistic_regression", "steps=[ingest,validate],[bogus]")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "[job 1] mlflow-pipeline: error: unknown step(s) ['bogus']" in result.stderr
    assert "1 sweep job(s) failed" in result.stderr
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FAILED"
    store_override = f" tracking.root={store.root}"
    jobs = {
        run.data.tags["pipeline.overrides"].replace(store_override, ""): run
        for run in _roles(store, sweep.info.run_id)["job"]
    }
    assert {key: run.info.status for key, run in jobs.items()} == {
        "model=logistic_regression steps=[ingest,validate]": "FINISHED",
        "model=logistic_regression steps=[bogus]": "FAILED",
    }
    failed = jobs["model=logistic_regression steps=[bogus]"]
    assert "unknown step(s) ['bogus']" in failed.data.tags["pipeline.error"]
    # Named by what it was to run (it had been "pipeline", like no other run).
    assert failed.info.run_name.startswith("failed job (model=logistic_regression steps=[bogus]")
    summary = _summary(store, sweep.info.run_id)
    rows = {row["overrides"].replace(store_override, ""): row["status"] for row in summary}
    assert rows == {key: run.info.status for key, run in jobs.items()}


def test_a_project_stage_raising_in_one_job_fails_that_job_and_the_sweep_goes_on(
    store: Store,
) -> None:
    """A project's own stage raising a plain exception in one job: that job is FAILED with its
    traceback in the log; the other runs, the summary is written, the best job registered.
    (The exception had ended the sweep: no summary, nothing registered, Hydra's traceback.)"""
    csv_path = write_classification_csv(store.root / "customers.csv")
    cli = VENV_BIN / "mlflow-pipeline"
    made = store.run(
        cli,
        "init",
        "proj",
        f"data.path={csv_path}",
        "data.target=label",
        "data.task=classification",
    )
    assert_ok(made)
    project = store.root / "proj"
    [stages] = (project / "src").glob("*/stages.py")
    text = stages.read_text("utf-8")
    body = "    features = train.drop("
    guard = (
        '    if cfg.data.get("outlier_z", 4) <= 0:\n'
        '        raise ValueError("outlier_z must be > 0")\n'
    )
    assert body in text
    stages.write_text(text.replace(body, guard + body, 1), "utf-8")

    result = subprocess.run(
        [str(cli), "-m", "model=logistic_regression", "+data.outlier_z=-1,4"],
        cwd=project,
        env=store.env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "[job 0] mlflow-pipeline: error: outlier_z must be > 0" in result.stderr
    assert "[job 0] ValueError: outlier_z must be > 0" in result.stdout  # its traceback, logged
    assert "1 sweep job(s) failed" in result.stderr
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FAILED"
    jobs = {
        run.data.tags["pipeline.overrides"]: run for run in _roles(store, sweep.info.run_id)["job"]
    }
    failed = jobs["model=logistic_regression +data.outlier_z=-1"]
    assert failed.info.status == "FAILED"
    assert "outlier_z must be > 0" in failed.data.tags["pipeline.error"]
    best = jobs["model=logistic_regression +data.outlier_z=4"]
    assert best.info.status == "FINISHED"
    assert sorted(row["status"] for row in _summary(store, sweep.info.run_id)) == [
        "FAILED",
        "FINISHED",
    ]
    assert sweep.data.tags["pipeline.sweep.best_run"] == best.info.run_id
    [version] = store.versions("proj")
    assert store.client.get_run(version.run_id).data.tags["pipeline.run_id"] != failed.info.run_id
