"""Tracking URI resolution, experiment set-up, code version, and every tag name in one place."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.config import PROJECT_ROOT

# Tags this framework writes. mlflow.* tags are MLflow's own and drive the UI.
TAG_PARENT = "mlflow.parentRunId"
TAG_GIT_COMMIT_MLFLOW = "mlflow.source.git.commit"
TAG_KIND = "pipeline.kind"  # "pipeline", "stage" or "sweep"
TAG_STAGE = "pipeline.stage"
TAG_PIPELINE_RUN = "pipeline.run_id"
TAG_RUNNER_MODE = "pipeline.runner_mode"
TAG_GIT_COMMIT = "pipeline.git_commit"
TAG_GIT_DIRTY = "pipeline.git_dirty"
TAG_ERROR = "pipeline.error"
TAG_STEPS = "pipeline.steps"
TAG_OVERRIDES = "pipeline.overrides"  # the Hydra overrides the pipeline was composed with
TAG_UPSTREAM_PREFIX = "pipeline.upstream."  # + dataset name -> run id it was read from

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_RUN_ID = "MLFLOW_RUN_ID"


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
    uri = cfg.tracking.uri or os.environ.get(ENV_TRACKING_URI)
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
    os.environ[ENV_TRACKING_URI] = tracking.uri


def ensure_experiment(client: MlflowClient, name: str, tracking: Tracking) -> str:
    """The id of experiment ``name``, created (with a fixed artifact location) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking.artifact_root:
        location = Path(tracking.artifact_root, _slug(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our look-up and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


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
        MlflowClient().set_tag(run_id, TAG_ERROR, str(error)[:5000] or type(error).__name__)
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
        TAG_GIT_COMMIT: commit,
        TAG_GIT_COMMIT_MLFLOW: commit,
        TAG_GIT_DIRTY: str(bool(status)).lower(),
    }
