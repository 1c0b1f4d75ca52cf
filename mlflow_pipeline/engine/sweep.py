"""Hydra multirun sweeps: one parent run per sweep with every job's pipeline run nested under
it, the stages every job shares run once first, a summary of the jobs, and only the best job
registered.

The sweep run and its jobs find each other through the store: the sweep run is tagged with the
multirun's sweep directory (``hydra.sweep.dir``, the same string in every job, whatever the
launcher: in-process, joblib processes, Ray or SLURM workers), and a job looks it up.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline import interrupt
from mlflow_pipeline.config import (
    METRICS,
    Task,
    dotted_paths,
    load_config,
    promotion_metric,
    split_overrides,
)
from mlflow_pipeline.engine.inputs import find_stage_run
from mlflow_pipeline.engine.pipeline import load_pipeline, selected_stages
from mlflow_pipeline.engine.result import PipelineResult, describe
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.engine.warm import (
    HURRY_FILE,
    STARTED,
    import_all,
    import_modules,
    may_restore_priority,
)
from mlflow_pipeline.errors import PipelineError
from mlflow_pipeline.redaction import (
    redact_file,
    redact_logs,
    redact_overrides,
    redact_records_of,
    redact_url,
    restore_redacted,
    secrets_of,
)
from mlflow_pipeline.store.artifacts import save_text
from mlflow_pipeline.store.tracking import (
    activate,
    code_version,
    ensure_experiment,
    owner_tags,
    reap_dead_runs,
    record_error,
    resolve_tracking,
    retry_transient,
    wait_for_owning_children,
)
from mlflow_pipeline.tags import MLflow, Runs, Sweep

log = logging.getLogger(__name__)
# The loggers of Hydra's launchers (they log each job's overrides as "#<n> : ...").
LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_ray_launcher._core",
    "hydra_plugins.hydra_ray_launcher._core_aws",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)

SWEEP_SUMMARY = "sweep_summary.csv"


class SweepFailed(SystemExit):
    """The sweep finished with failed jobs, or its end (summary, the best job's register run)
    failed with ``error``: the CLI exits 1 with this message."""

    def __init__(self, failures: int, error: str | None = None) -> None:
        super().__init__(1)
        self.failures = failures
        self.error = error

    def __str__(self) -> str:
        jobs = f"{self.failures} sweep job(s) failed" if self.failures else ""
        if self.error is None:
            return jobs
        return f"error: sweep: {self.error}" + (f" ({jobs})" if jobs else "")


@dataclass(frozen=True)
class FailedJob:
    """What a failed job returns to the sweeper (the basic one ignores it). To Optuna's, the
    worst value of the search's ``direction``: the sampler steers away from it and the search
    goes on. (A NaN makes that sweeper raise and end the search; an error value marks the
    trial FAIL, and a search whose every trial failed then ends in a traceback.) The job's
    run is FAILED with the error, the sweep counts it, and ``str`` says it."""

    error: str
    minimize: bool = False

    def __float__(self) -> float:
        return math.inf if self.minimize else -math.inf

    def __str__(self) -> str:
        return f"the job failed: {self.error}"

    @classmethod
    def of(cls, error: BaseException, sweeper: DictConfig) -> FailedJob:
        """The failed job's value for ``sweeper`` (``hydra.sweeper`` of the job's config)."""
        return cls(str(error), minimize=str(sweeper.get("direction", "")) == "minimize")


class SweepRun(Callback):
    """Hydra callback: one parent run for a multirun sweep.

    Before the jobs: the store and experiment are created once (a brand-new database must not
    be created by parallel jobs at once), and the stages no swept key touches (ingest, validate,
    split when only the model is swept) run once, so that every job's cache hits them. After
    the jobs: a summary table (job config -> metrics) on the sweep run, the best job on the
    promotion metric, and one register pipeline run for that job only. Raises SweepFailed when
    jobs failed.

    ``parent_run_id``: adopt this run as the sweep run (``mlflow run . -P hydra_options="-m
    ..."`` passes the run ``mlflow run`` made, as ``+hydra.callbacks.sweep_run.parent_run_id``).
    """

    def __init__(self, parent_run_id: str | None = None) -> None:
        self.parent_run_id = parent_run_id or None
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.failed = False
        self.imports: BackgroundImports | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The joblib launcher pickles the callbacks for its workers: the import thread stays.
        return {**self.__dict__, "imports": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith("RayLauncher"):
            host = str(OmegaConf.select(launcher, "ray.init.address") or "").split(":")[0]
            if host in ("127.0.0.1", "localhost"):  # else Ray swaps in the network IP and hangs
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        cfg = task_config(config)
        # Hydra's launchers log every job's overrides (a secret included) before it runs.
        secrets = secrets_of(cfg)
        redact_logs(secrets)
        redact_records_of(LAUNCHER_LOGGERS, secrets)
        tracking = resolve_tracking(cfg)
        activate(tracking)
        self.client = retry_transient(MlflowClient)
        experiment_id = retry_transient(
            ensure_experiment, self.client, cfg.tracking.experiment_name, tracking
        )
        self.run_id = self._open_sweep_run(config, experiment_id)
        # A sweep that raises (a job's overrides do not compose) skips on_multirun_end.
        atexit.register(self._close_abandoned)
        self.client.log_text(self.run_id, json.dumps(_sweep_grid(config), indent=2), "grid.json")
        modules = warm_modules(cfg) if _joblib(launcher) else []
        warming = warm_joblib_workers(launcher, modules) if modules else None
        shared = shared_stages(cfg, swept_keys(config))
        if shared:
            log.info("sweep: running the stages every job shares once: %s", ", ".join(shared))
            shared_cfg = cfg.copy()
            shared_cfg.steps = shared
            overrides = list(config.hydra.overrides.task)
            try:
                run_pipeline(shared_cfg, overrides, parent_run_id=self.run_id, role="shared")
            except PipelineError as exc:
                # The jobs will run (and report) these stages themselves.
                log.warning("sweep: the shared stages failed: %s", exc)
        if warming is not None:
            warming.hurry()  # nothing else runs now: the rest of the imports at full priority
            # Waited for until every worker has taken its warm-up task, not until the warm-up
            # is done: Hydra's sweeper composes every job's config meanwhile (~0.16 s a job,
            # in this process), and the launcher's Parallel (the same loky executor) queues
            # the jobs behind the warm-up. The register run after the jobs runs here: its
            # modules are imported once the warm-up is done.
            warming.wait_started()
            self.imports = import_in_background(modules, after=warming.thread)

    def _open_sweep_run(self, config: DictConfig, experiment_id: str) -> str:
        """Create the sweep run (or adopt ``parent_run_id``) and tag it; returns its id."""
        tags = {
            Runs.KIND: "sweep",
            **code_version(),
            **owner_tags(),
            Sweep.OVERRIDES: " ".join(redact_overrides(config.hydra.overrides.task)),
            Sweep.LAUNCHER: str(config.hydra.launcher.get("_target_", "")),
            Sweep.SWEEPER: str(config.hydra.sweeper.get("_target_", "")),
            Sweep.DIR: str(config.hydra.sweep.dir),
        }
        if self.parent_run_id:
            for key, value in tags.items():
                self.client.set_tag(self.parent_run_id, key, value)
            return self.parent_run_id
        return self.client.create_run(experiment_id, run_name="sweep", tags=tags).info.run_id

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        status = getattr(job_return, "status", None)
        if status is not None and status.name == "FAILED":
            self.failed = True

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra's sweeper saved multirun.yaml (every override as typed) after our start hook.
        redact_file(Path(config.hydra.sweep.dir) / "multirun.yaml", secrets_of(task_config(config)))
        if not (self.client and self.run_id):
            return
        if self.imports is not None:
            self.imports.hurry()
        if _joblib(config.hydra.launcher):
            release_joblib_workers()
        failures, error = 0, None
        try:
            failures = self._finish(
                task_config(config), list(config.hydra.overrides.task), grid_jobs(config)
            )
        except Exception as exc:  # the sweep run must not stay RUNNING, whatever happened
            self.failed = True
            record_error(self.run_id, exc)
            error = redact_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        finally:
            atexit.unregister(self._close_abandoned)
            failed = self.failed or failures > 0
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
        if failures or error is not None:  # the command exits 1 (`mlflow run` fails the run)
            raise SweepFailed(failures, error)

    def _finish(
        self, cfg: DictConfig, sweep_overrides: list[str], launched: list[str] | None
    ) -> int:
        """The summary, then the best job registered (a register run under the sweep);
        returns the number of failed jobs, those of ``launched`` that left no run included.
        ``sweep_overrides`` (in memory) give back the secrets the best job's recorded
        overrides had redacted."""
        summary = summarize_sweep(self.client, self.run_id, cfg, launched)
        failures = sum(row["status"] != "FINISHED" for row in summary.rows)
        register_stage = load_pipeline(cfg).register_stage
        registers = register_stage in [s.name for s in selected_stages(load_pipeline(cfg), cfg)]
        if summary.best is None or not registers:
            return failures
        overrides = restore_redacted(split_overrides(summary.best["overrides"]), sweep_overrides)
        best_cfg = load_config(
            [
                *overrides,
                f"steps=[{register_stage}]",
                f"runner.upstream_run_id={summary.best['run_id']}",
            ]
        )
        result = run_pipeline(best_cfg, overrides, parent_run_id=self.run_id, role="register")
        log.info("sweep: %s", describe(result))
        return failures

    def _close_abandoned(self) -> None:
        """At exit: mark a sweep run whose multirun stopped before on_multirun_end KILLED
        (Ctrl-C) or FAILED, and the runs of jobs whose worker process is gone the same. A
        SIGINT to this process alone (not its group) aborts the joblib launcher, which kills
        its workers: their runs would stay RUNNING until a later run reaped them."""
        if self.client and self.run_id:
            status = "KILLED" if interrupt.requested() else "FAILED"
            self.client.set_terminated(self.run_id, status)
            try:
                experiment_id = self.client.get_run(self.run_id).info.experiment_id
                wait_for_owning_children(self.client, experiment_id, WORKERS_EXIT_S)
                by = "the interrupted sweep" if status == "KILLED" else "the failed sweep"
                reap_dead_runs(self.client, experiment_id, status=status, by=by)
            except Exception as exc:  # best effort: a later run reaps them
                log.warning("sweep: the runs of its stopped jobs stay RUNNING: %s", exc)


# How long an abandoned sweep waits at exit for its jobs' worker processes to end.
WORKERS_EXIT_S = 10.0


# What every job of a reference-like pipeline imports besides its stages and `_target_`s: the
# CLI (Hydra's task function), the model logging, the metrics and the report plots.
WARM_MODULES = (
    "mlflow_pipeline.cli.app",
    "mlflow.sklearn",
    "skops.io",
    "sklearn.metrics",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
)


def warm_modules(cfg: DictConfig) -> list[str]:
    """The modules a sweep job imports: WARM_MODULES, the modules of the pipeline's stage
    functions and gates, of every ``_target_`` in the config (features) and of the model's
    estimator classes (``model.estimator``)."""
    pipeline = load_pipeline(cfg)
    modules = dict.fromkeys(WARM_MODULES)
    for stage in pipeline.stages:
        for func in (stage.func, stage.gate):
            if func is not None:
                modules[func.__module__] = None

    for path in dotted_paths(cfg):
        modules[path.rsplit(".", 1)[0]] = None
    return list(modules)


@dataclass
class WarmWorkers:
    """The joblib workers being started in ``thread``, meeting in the directory ``meeting``;
    ``pids`` once it is done."""

    thread: threading.Thread
    meeting: Path
    workers: int
    pids: list[int] = field(default_factory=list)

    def hurry(self) -> None:
        """Workers still importing at a lowered priority get their normal one back."""
        try:
            Path(self.meeting, HURRY_FILE).touch()
        except OSError:  # the warming ended already (the directory is gone)
            pass

    def wait_started(self, timeout: float = 60.0) -> None:
        """Wait until every worker has taken its warm-up task, or the warm-up has ended. The
        launcher's jobs, submitted after this, then queue behind the warm-up: a job taken
        first would keep its worker from the warm-up task that the other workers wait for."""
        deadline = time.monotonic() + timeout
        while self.thread.is_alive() and time.monotonic() < deadline:
            try:
                started = sum(name.endswith(STARTED) for name in os.listdir(self.meeting))
            except OSError:  # the warm-up ended (the directory is gone)
                return
            if started >= self.workers:
                return
            time.sleep(0.02)

    def join(self) -> list[int]:
        self.thread.join()
        return self.pids


def warm_joblib_workers(launcher: DictConfig, modules: list[str]) -> WarmWorkers | None:
    """For ``hydra/launcher=joblib`` (``parallel``): start the launcher's worker processes
    now, in a thread, each importing ``modules``, while this process runs the shared stages.
    The launcher's ``Parallel`` (the same arguments, so the same loky executor) then finds its
    workers started and the jobs' imports done: ~2 s of worker start-up and the first job's
    imports in each worker otherwise (docs/benchmarks.md, sweeps). None for other launchers.
    Best effort: a failure is logged and the launcher starts its workers itself."""
    if not _joblib(launcher):
        return None
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, delayed, effective_n_jobs

    # What hydra_joblib_launcher._core.launch passes to Parallel, so that loky reuses it.
    joblib_cfg = OmegaConf.to_container(launcher, resolve=True)
    joblib_cfg.pop("_target_", None)
    joblib_cfg["backend"] = "loky"
    process_joblib_cfg(joblib_cfg)
    workers = effective_n_jobs(joblib_cfg.get("n_jobs"))

    meeting = tempfile.mkdtemp(prefix="mlflow-pipeline-warm-")

    def warm() -> None:
        started = time.perf_counter()
        try:
            pids = Parallel(**joblib_cfg)(
                delayed(import_modules)(modules, meeting, workers) for _ in range(workers)
            )
        except KeyboardInterrupt:  # a Ctrl-C the workers got: the sweep's process has its own
            return
        except Exception as exc:  # the launcher starts its own workers then
            if not _aborted(exc):
                log.info("sweep: warming the joblib workers failed: %s", exc)
            return
        finally:
            shutil.rmtree(meeting, ignore_errors=True)
        warming.pids[:] = sorted(set(pids))
        log.info(
            "sweep: joblib workers started and warmed in %.1f s: pids %s",
            time.perf_counter() - started,
            ", ".join(map(str, warming.pids)),
        )

    warming = WarmWorkers(
        threading.Thread(target=warm, name="warm-joblib-workers", daemon=True),
        Path(meeting),
        workers,
    )
    warming.thread.start()
    return warming


def _aborted(error: BaseException) -> bool:
    """Did the warm-up end because the launcher's Parallel, sharing its executor, aborted
    (a Ctrl-C, a failed job)? That is not the warm-up's failure: the sweep reports it."""
    from joblib.externals.loky.process_executor import ShutdownExecutorError

    shut_down = isinstance(error, ShutdownExecutorError) or isinstance(
        error.__cause__ or error.__context__, ShutdownExecutorError
    )
    return shut_down or interrupt.requested()


def _joblib(launcher: DictConfig) -> bool:
    return str(launcher.get("_target_", "")).endswith("JoblibLauncher")


# How long the register run waits for the background imports' last module before it goes on.
HURRY_TIMEOUT_S = 120.0


@dataclass
class BackgroundImports:
    """Modules being imported in ``thread`` (``import_in_background``); ``native_id`` is set
    while the thread runs at a lowered priority."""

    thread: threading.Thread
    stop: threading.Event = field(default_factory=threading.Event)
    native_id: int | None = None

    def hurry(self) -> None:
        """This process needs the modules now. The thread stops after the module it is
        importing, gets its normal priority back, and is waited for: two threads importing
        one package at once can fail on Python 3.11 (a partially initialised module)."""
        self.stop.set()
        if self.native_id is not None and self.thread.is_alive():
            try:
                os.setpriority(os.PRIO_PROCESS, self.native_id, 0)
            except OSError:  # checked before lowering it; the thread just ended
                pass
        self.thread.join(HURRY_TIMEOUT_S)


def import_in_background(
    modules: list[str], after: threading.Thread | None = None
) -> BackgroundImports:
    """Import ``modules`` in a daemon thread of this process. On Linux, where the priority can
    be restored (``may_restore_priority``), the thread runs at ``nice`` 19 so that it takes
    the CPU the jobs leave idle. In a joblib sweep the CLI's process waits during the jobs and
    then runs the best job's register run, which imports the model code (~2.5 s cold).
    ``after``: a thread to wait for first (the workers' warm-up), unless hurried. Logs how
    many modules it imported in how long."""

    def run() -> None:
        while after is not None and after.is_alive() and not imports.stop.is_set():
            after.join(0.05)
        started = time.perf_counter()
        if may_restore_priority():
            try:
                native_id = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, native_id, 19)
                imports.native_id = native_id
            except OSError:  # a normal-priority thread then
                pass
        tried = import_all(modules, imports.stop)
        log.info(
            "sweep: %d of %d modules for the register run imported in the background in %.1f s",
            tried,
            len(modules),
            time.perf_counter() - started,
        )

    imports = BackgroundImports(
        threading.Thread(target=run, name="import-register-modules", daemon=True)
    )
    imports.thread.start()
    return imports


def release_joblib_workers() -> None:
    """Tell the joblib launcher's worker processes (loky's reusable executor) to exit now,
    without waiting: they stop while the register run works, not at this process's exit
    (~1.8 s there, docs/benchmarks.md, sweeps). A later ``Parallel`` starts new ones."""
    from joblib.externals.loky import get_reusable_executor

    # reuse=True: the running executor whatever its arguments (no new one is started).
    get_reusable_executor(reuse=True).shutdown(wait=False)


def sweep_run_of(tracking_uri: str | None, sweep_dir: str) -> str:
    """The RUNNING sweep run of the multirun writing to ``sweep_dir``: a job's parent, in the
    store at ``tracking_uri`` (None: the one the sweep callback activated). Raises
    PipelineError when there is none."""
    client = retry_transient(MlflowClient, tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = retry_transient(
        lambda: client.search_runs(
            experiments,
            f"tags.`{Runs.KIND}` = 'sweep' and tags.`{Sweep.DIR}` = '{sweep_dir}' "
            "and attributes.status = 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    if not runs:
        raise PipelineError(f"no RUNNING sweep run for the multirun in {sweep_dir}")
    return runs[0].info.run_id


def record_failed_job(
    sweep_dir: str,
    overrides: list[str],
    error: BaseException,
    sweep_run_id: str | None = None,
) -> None:
    """A sweep job that failed before its pipeline run existed (its config did not check, a
    step it names does not exist, the store refused the run): a FAILED pipeline run under the
    sweep run (``sweep_run_id``, else the one of ``sweep_dir``) says so, in the UI and in the
    summary. Best effort: when the store cannot take it either, a warning says so, and the
    sweep counts the job as failed from the runs it finds missing (``grid_jobs``)."""
    try:
        client = retry_transient(MlflowClient)
        parent = sweep_run_id or sweep_run_of(None, sweep_dir)
        experiment_id = retry_transient(lambda: client.get_run(parent).info.experiment_id)
        said = " ".join(redact_overrides(overrides))
        tags = {
            Runs.KIND: "pipeline",
            Sweep.ROLE: "job",
            MLflow.PARENT: parent,
            Runs.OVERRIDES: said,
            Runs.ERROR: redact_url(str(error))[:5000],
        }
        # Named by what it was to run: its config never loaded, so it has no model-data name.
        name = f"failed job ({said[:200]}{'...' if len(said) > 200 else ''})"
        run = retry_transient(lambda: client.create_run(experiment_id, run_name=name, tags=tags))
        retry_transient(client.set_terminated, run.info.run_id, "FAILED")
    except Exception as exc:
        log.warning("sweep: the failed job could not be recorded in the store: %s", exc)


def task_config(config: DictConfig) -> DictConfig:
    """The pipeline config inside a Hydra callback's config (without the ``hydra`` node)."""
    cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    cfg.pop("hydra", None)
    OmegaConf.resolve(cfg)
    return cfg


def swept_keys(config: DictConfig) -> set[str]:
    """The config keys a sweep varies: sweep overrides (``model=a,b``, ``model.C=0.1,1``) and
    the search space of a sweeper (``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: set[str] = set()
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys |= {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    params = config.hydra.sweeper.get("params") or {}
    keys |= {str(k) for k in params}
    return keys


def shared_stages(cfg: DictConfig, keys: set[str]) -> list[str]:
    """The stages (in order) whose config no swept key reaches, nor that of a stage they read
    from: every job would compute them identically. ``seed`` reaches every stage with a
    ``seed_keys`` entry (split, train). Only an optimisation: the cache, not this list, decides
    what a job reuses."""
    groups = {key.split(".")[0].split("/")[0] for key in keys}
    pipeline = load_pipeline(cfg)
    made_by = pipeline.producers()
    shared: list[str] = []
    for stage in selected_stages(pipeline, cfg):
        if stage.name == pipeline.register_stage or groups & set(stage.config_keys):
            continue
        if "seed" in groups and stage.seed_keys:
            continue
        if all(made_by[d.name].name in shared for d in stage.reads):
            shared.append(stage.name)
    return shared


def _sweep_grid(config: DictConfig) -> dict[str, Any]:
    params = config.hydra.sweeper.get("params") or {}
    return {
        "overrides": redact_overrides(config.hydra.overrides.task),
        "search_space": {str(k): str(v) for k, v in params.items()},
        "sweeper": str(config.hydra.sweeper.get("_target_", "")),
        "launcher": str(config.hydra.launcher.get("_target_", "")),
    }


@dataclass
class SweepSummary:
    metric: str
    greater_is_better: bool
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None


def summarize_sweep(
    client: MlflowClient, sweep_run_id: str, cfg: DictConfig, launched: list[str] | None = None
) -> SweepSummary:
    """Every job of the sweep with its config and metrics, logged as ``sweep_summary.csv`` on
    the sweep run, and the best FINISHED job on the promotion metric (tags
    ``pipeline.sweep.best_run`` / ``best_overrides``, metric ``best_<metric>``). A job of
    ``launched`` (``grid_jobs``) that left no run in the store has a row of status NO_RUN."""
    experiment_id = client.get_run(sweep_run_id).info.experiment_id
    metric, greater_is_better = promotion_metric(cfg)
    rows = _job_rows(client, experiment_id, sweep_run_id, cfg)
    rows += _rows_of_missing_jobs(launched or [], rows)
    scored = [r for r in rows if r["status"] == "FINISHED" and r.get(metric) is not None]
    best = None
    if scored:
        pick = max if greater_is_better else min
        best = pick(scored, key=lambda r: r[metric])
        client.set_tag(sweep_run_id, Sweep.BEST, best["run_id"])
        client.set_tag(sweep_run_id, Sweep.BEST_OVERRIDES, best["overrides"])
        client.log_metric(sweep_run_id, f"best_{metric}", best[metric])
    client.log_metric(sweep_run_id, "jobs", len(rows))
    client.log_metric(sweep_run_id, "jobs_failed", sum(r["status"] != "FINISHED" for r in rows))
    table = pd.DataFrame(rows)
    if not table.empty:
        table["best"] = table["run_id"] == (best or {}).get("run_id")
    save_text(client, sweep_run_id, SWEEP_SUMMARY, table.to_csv(index=False))
    for row in rows:
        mark = "*" if best and row["run_id"] == best["run_id"] else " "
        log.info(
            "sweep %s %s %s=%s %s", mark, row["status"], metric, row.get(metric), row["overrides"]
        )
    return SweepSummary(metric, greater_is_better, rows, best)


def _job_rows(
    client: MlflowClient, experiment_id: str, sweep_run_id: str, cfg: DictConfig
) -> list[dict[str, Any]]:
    """One row per job: its run, overrides, status and the metrics of its metrics stage."""
    metrics_stage = load_pipeline(cfg).metrics_stage
    jobs = client.search_runs(
        [experiment_id],
        f"tags.`{MLflow.PARENT}` = '{sweep_run_id}' and tags.`{Sweep.ROLE}` = 'job'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    rows: list[dict[str, Any]] = []
    for job in jobs:
        scored_by = metrics_stage and _scoring_run(
            client, experiment_id, metrics_stage, job.info.run_id
        )
        metrics = client.get_run(scored_by).data.metrics if scored_by else {}
        rows.append(
            {
                "run_id": job.info.run_id,
                "overrides": job.data.tags.get(Runs.OVERRIDES, ""),
                "status": job.info.status,
                **{m: metrics.get(m) for m in METRICS[Task(cfg.data.task).value]},
            }
        )
    return rows


def grid_jobs(config: DictConfig) -> list[str] | None:
    """The overrides of every job a grid sweep (Hydra's basic sweeper) launches, as each job's
    run records them (``pipeline.overrides``), so that a job that stopped before it could
    record anything still counts as failed. None for a sweeper that picks its jobs as it goes
    (Optuna) or a sweep this cannot expand without Hydra's config loader (``glob``)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # As BasicSweeper.sweep expands them: its params first, then the command line's.
    params = config.hydra.sweeper.get("params") or {}
    typed = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    try:
        [jobs] = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(typed), None)
    except Exception as exc:
        log.debug("sweep: jobs not counted: %s", exc)
        return None
    return [" ".join(redact_overrides(job)) for job in jobs]


def _rows_of_missing_jobs(launched: list[str], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A NO_RUN row for each launched job no row stands for (a job that failed before its
    pipeline run existed and could not record that either: the store refused it, or the job
    could not find its sweep run)."""
    missing = Counter(launched) - Counter(row["overrides"] for row in rows)
    for overrides in missing.elements():
        log.error(
            "sweep: job %r left no run in the store: see its log in the sweep folder", overrides
        )
    return [{"run_id": None, "overrides": o, "status": "NO_RUN"} for o in missing.elements()]


def _scoring_run(
    client: MlflowClient, experiment_id: str, stage: str, pipeline_run_id: str
) -> str | None:
    """The run of the metrics stage in a job: its FINISHED run (a hit: the run it reused), else
    the one that logged its metrics and then failed (a missed threshold), so that a failed
    job's row shows the scores it failed on. Only FINISHED jobs can be the best."""
    found = find_stage_run(client, experiment_id, stage, pipeline_run_id)
    if found:
        return found
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{Runs.STAGE}` = '{stage}' and tags.`{Runs.PIPELINE_RUN}` = '{pipeline_run_id}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def objective(result: PipelineResult, cfg: DictConfig) -> float | None:
    """The value a hyperparameter search maximises for a finished job: the promotion metric
    of its metrics stage's run, negated when lower is better."""
    metrics_stage = result.pipeline.metrics_stage if result.pipeline else None
    run_id = result.stage_run_ids.get(metrics_stage) if metrics_stage else None
    if not run_id:
        return None
    metric, greater_is_better = promotion_metric(cfg)
    value = MlflowClient().get_run(run_id).data.metrics.get(metric)
    if value is None:
        return None
    return float(value) if greater_is_better else -float(value)
