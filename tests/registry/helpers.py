"""Shared set-ups of the registry tests."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from mlflow_pipeline.registry.audit import Why
from mlflow_pipeline.registry.model_registry import ModelRegistry


def two_versions(client: MlflowClient, model: str) -> None:
    """Versions 1 and 2 of ``model``; champion on 1, as a first pipeline run leaves it."""
    registry = ModelRegistry(client, model)
    for _ in range(2):
        with mlflow.start_run():
            mlflow.log_text("x", "model/x.txt")
            registry.register(mlflow.get_artifact_uri("model"), {})
    why = Why(kind="pipeline", actor="test", user="ci", reason="first")
    registry.move_alias("champion", "1", why)
    registry.move_alias("challenger", "2", why)
