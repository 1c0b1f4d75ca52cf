"""Tracking URI resolution, experiment set-up, code version, and every tag name in one place."""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
import psutil
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.config import PROJECT_ROOT
from mlflow_pipeline.tags import Env, MLflow, Runs

log = logging.getLogger(__name__)
T = TypeVar("T")
# Messages of store errors worth retrying: the store briefly locked, busy or unreachable.
TRANSIENT_MARKERS = (
    "database is locked",
    "database table is locked",
    "connection refused",
    "could not connect",
    "connection reset",
    "temporarily unavailable",
    "timed out",
    "server closed the connection",
    "too many requests",
    "503",
)


@dataclass(frozen=True)
class Tracking:
    uri: str
    # Where new experiments keep artifacts; None lets the tracking server decide.
    artifact_root: str | None


def resolve_tracking(cfg: DictConfig) -> Tracking:
    """The absolute tracking URI (and artifact root for the embedded store) for ``cfg.tracking``.

    Order: ``tracking.uri``, then ``$MLFLOW_TRACKING_URI``, then the embedded SQLite store at
    ``<root>/mlflow.db`` with artifacts under ``<root>/mlruns``. Relative SQLite paths are made
    absolute so Hydra's output directories and ``mlflow run`` never scatter runs.
    """
    root = Path(cfg.tracking.root or PROJECT_ROOT).resolve()
    uri = cfg.tracking.uri or os.environ.get(Env.TRACKING_URI)
    if not uri:
        return Tracking(uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlruns"))
    uri = absolute_sqlite_uri(uri)
    artifact_root = str(root / "mlruns") if uri.startswith("sqlite:") else None
    return Tracking(uri=uri, artifact_root=artifact_root)


def absolute_sqlite_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def activate(tracking: Tracking) -> None:
    """Point this process, and every process it starts, at ``tracking``."""
    mlflow.set_tracking_uri(tracking.uri)
    mlflow.set_registry_uri(tracking.uri)
    os.environ[Env.TRACKING_URI] = tracking.uri
    # A progress bar per artifact read floods the log of every stage that reads one.
    os.environ.setdefault(Env.ARTIFACTS_PROGRESS_BAR, "false")


def ensure_experiment(client: MlflowClient, name: str, tracking: Tracking) -> str:
    """The id of experiment ``name``, created (with a fixed artifact location) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=experiment_location(tracking, name))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our look-up and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def experiment_location(tracking: Tracking, name: str) -> str | None:
    """Where a new experiment ``name`` keeps its artifacts: under the embedded store's artifact
    root, fixed (not the working directory of whoever creates it); None for a server."""
    if not tracking.artifact_root:
        return None
    return Path(tracking.artifact_root, _slug(name)).as_uri()


def end_active_run(failure: BaseException | None = None) -> None:
    """End the active run: FINISHED, KILLED after an interrupt, FAILED after any other error."""
    if failure is None:
        mlflow.end_run()
    elif isinstance(failure, KeyboardInterrupt):
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))


def record_error(run_id: str, error: BaseException) -> None:
    """Best effort: tag ``run_id`` with the error's message (the store may be what failed)."""
    try:
        MlflowClient().set_tag(run_id, Runs.ERROR, str(error)[:5000] or type(error).__name__)
    except Exception:  # the original error matters more than this tag
        pass


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "experiment"


@functools.cache
def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the project, when it is a git checkout (else empty)."""
    try:
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        Runs.GIT_COMMIT: commit,
        MLflow.GIT_COMMIT: commit,
        Runs.GIT_DIRTY: str(bool(status)).lower(),
    }


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run (see reap_dead_runs)."""
    me = psutil.Process()
    return {Runs.HOST: socket.gethostname(), Runs.PID: str(me.pid), Runs.PID_STARTED: _started(me)}


def _started(process: psutil.Process) -> str:
    return f"{process.create_time():.2f}"


def _alive(pid: str, started: str) -> bool:
    try:
        process = psutil.Process(int(pid))
        return _started(process) == started and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def reap_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark FAILED every RUNNING run of ``experiment_id`` owned by a process of this host that
    no longer exists (killed with SIGKILL, crashed, machine rebooted). Returns their ids.

    Runs owned by live processes, by other hosts, or without owner tags are left alone.
    """
    host = socket.gethostname()
    runs = client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{Runs.HOST}` = '{host}'",
        max_results=1000,
    )
    reaped = []
    for run in runs:
        tags = run.data.tags
        if _alive(tags.get(Runs.PID, ""), tags.get(Runs.PID_STARTED, "")):
            continue
        message = (
            f"process {tags.get(Runs.PID)} on {host} ended while this run was RUNNING "
            "(killed or crashed); marked FAILED by a later pipeline run"
        )
        client.set_tag(run.info.run_id, Runs.ERROR, message)
        client.set_terminated(run.info.run_id, "FAILED")
        reaped.append(run.info.run_id)
    if reaped:
        log.info("marked %d abandoned run(s) FAILED: %s", len(reaped), ", ".join(reaped))
    return reaped


def is_transient(error: BaseException) -> bool:
    """Is ``error`` the store being briefly locked, busy or unreachable?"""
    text = " ".join(str(e) for e in _chain(error)).lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


def _chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def retry_transient(
    call: Callable[..., T],
    *args: object,
    attempts: int = 5,
    first_delay_s: float = 0.5,
    what: str = "store",
) -> T:
    """``call(*args)``, retried with exponential backoff (0.5, 1, 2, 4 s) while it fails with a
    transient store error; any other error, or the last attempt's, is raised at once."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return call(*args)
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning(
                "%s: transient error (attempt %d/%d), retrying in %.1f s: %s",
                what,
                attempt,
                attempts,
                delay,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
