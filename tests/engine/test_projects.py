"""runner=projects: what an entry point's process is handed."""

from __future__ import annotations

import os

import pytest

from mlflow_pipeline.cli.project import split_options
from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine.projects import secrets_via_environment


def test_secrets_reach_an_entry_point_through_the_environment(monkeypatch: pytest.MonkeyPatch):
    """MLflow logs an entry point's parameters: a secret goes as ${oc.env:...} instead, and the
    entry point's config resolves it back."""
    overrides = [
        "alerts.webhook='https://hooks.example/x?token=tok-123456'",
        "+data.api_token=key-987654",
        "model=random_forest",
    ]
    for name in [n for n in os.environ if n.startswith("MLFLOW_PIPELINE_SECRET_")]:
        monkeypatch.delenv(name)
    handed = secrets_via_environment(load_config(overrides), overrides)
    parameter = " ".join(handed)
    assert "tok-123456" not in parameter
    assert "key-987654" not in parameter
    assert handed[2] == "model=random_forest"
    child = load_config(split_options(parameter))
    assert child.alerts.webhook == "https://hooks.example/x?token=tok-123456"
    assert child.data.api_token == "key-987654"
    for name in ("MLFLOW_PIPELINE_SECRET_0", "MLFLOW_PIPELINE_SECRET_1"):
        os.environ.pop(name)  # set by the call, not by monkeypatch
