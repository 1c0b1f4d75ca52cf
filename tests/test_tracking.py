"""Tracking URI resolution, experiment set-up and code version tags."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline import tracking
from mlflow_pipeline.config import PROJECT_ROOT, load_config


def test_environment_uri_wins_over_the_embedded_store(tracking_store):
    resolved = tracking.resolve_tracking(tracking_store.config())
    assert resolved.uri == tracking_store.uri
    assert resolved.artifact_root == str(tracking_store.root / "mlruns")


def test_config_uri_wins_over_the_environment(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    resolved = tracking.resolve_tracking(load_config([f"tracking.uri={uri}"]))
    assert resolved.uri == uri


def test_embedded_store_under_root_without_any_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    resolved = tracking.resolve_tracking(load_config([f"tracking.root={tmp_path}"]))
    assert resolved.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolved.artifact_root == str(tmp_path / "mlruns")


def test_default_root_is_the_project_root(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    resolved = tracking.resolve_tracking(load_config())
    assert resolved.uri == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def test_remote_uri_has_no_local_artifact_root():
    resolved = tracking.resolve_tracking(load_config(["tracking.uri=http://127.0.0.1:5000"]))
    assert resolved == tracking.Tracking(uri="http://127.0.0.1:5000", artifact_root=None)


def test_relative_sqlite_uri_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_sqlite_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
    assert tracking.absolute_sqlite_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert tracking.absolute_sqlite_uri("http://h:5000") == "http://h:5000"


def test_activate_points_process_and_children_at_the_store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'activated.db'}"
    tracking.activate(tracking.Tracking(uri=uri, artifact_root=None))
    assert mlflow.get_tracking_uri() == uri
    assert mlflow.get_registry_uri() == uri
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_ensure_experiment_creates_once_with_artifacts_under_root(tracking_store):
    client = MlflowClient(tracking_store.uri)
    store = tracking.Tracking(
        uri=tracking_store.uri, artifact_root=str(tracking_store.root / "mlruns")
    )
    first = tracking.ensure_experiment(client, "my data/v2", store)
    assert tracking.ensure_experiment(client, "my data/v2", store) == first
    location = client.get_experiment(first).artifact_location
    assert location == (tracking_store.root / "mlruns" / "my_data_v2").as_uri()


def test_code_version_of_this_checkout():
    version = tracking.code_version()
    if not (PROJECT_ROOT / ".git").exists():
        assert version == {}
        return
    assert len(version[tracking.TAG_GIT_COMMIT]) == 40
    assert version[tracking.TAG_GIT_COMMIT_MLFLOW] == version[tracking.TAG_GIT_COMMIT]
    assert version[tracking.TAG_GIT_DIRTY] in ("true", "false")
