"""The model registry side of promotion: versions, aliases and their audit tags.

Promotion is an alias move (``challenger`` -> ``champion``), never a registry stage; whatever
holds ``champion`` now, including a version a human chose in the UI, is what the rule compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.errors import RegistryError

# Tags written on every version this framework registers.
TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
TAG_METRIC = "promotion.metric"
TAG_CHALLENGER_SCORE = "promotion.challenger_score"
TAG_CHAMPION_SCORE = "promotion.champion_score"
TAG_CHAMPION_VERSION = "promotion.champion_version"
TAG_PIPELINE_RUN = "pipeline.run_id"


@dataclass(frozen=True)
class Aliases:
    champion: str
    challenger: str
    rollback: str


class ModelRegistry:
    """One registered model: read the champion, register versions, move aliases."""

    def __init__(self, client: MlflowClient, cfg: DictConfig) -> None:
        self.client = client
        self.name = cfg.registry.model_name
        self.aliases = Aliases(
            champion=cfg.registry.champion_alias,
            challenger=cfg.registry.challenger_alias,
            rollback=cfg.registry.rollback_alias,
        )

    def version_by_alias(self, alias: str) -> ModelVersion | None:
        """The version holding ``alias``, or None when the model or alias does not exist."""
        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise RegistryError(f"cannot read alias '{alias}' of '{self.name}': {exc}") from exc

    def champion(self) -> ModelVersion | None:
        return self.version_by_alias(self.aliases.champion)

    def load(self, version: str) -> Any:
        """The sklearn model of ``version``."""
        return mlflow.sklearn.load_model(f"models:/{self.name}/{version}")

    def version_of(self, model_uri: str) -> ModelVersion | None:
        """The version already registered from ``model_uri``, if any (a rerun after a crash
        between registering and finishing must not register the same model twice)."""
        try:
            versions = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            return None
        matches = [v for v in versions if v.source == model_uri]
        return max(matches, key=lambda v: int(v.version)) if matches else None

    def register(self, model_uri: str, tags: dict[str, str]) -> ModelVersion:
        """Register ``model_uri`` as a new version of this model."""
        try:
            return mlflow.register_model(model_uri, self.name, tags=tags)
        except MlflowException as exc:
            raise RegistryError(f"cannot register {model_uri} as '{self.name}': {exc}") from exc

    def set_alias(self, alias: str, version: str) -> None:
        try:
            self.client.set_registered_model_alias(self.name, alias, version)
        except MlflowException as exc:
            raise RegistryError(
                f"cannot set alias '{alias}' on '{self.name}' version {version}: {exc}"
            ) from exc

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)
