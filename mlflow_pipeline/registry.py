"""The model registry side of promotion: versions, aliases and their audit tags.

Promotion is an alias move (``challenger`` -> ``champion``), never a registry stage; whatever
holds ``champion`` now, including a version a human chose in the UI, is what the rule compares.
Every move made here is recorded in the model's audit trail (audit.py), and ``reconcile``
records the moves made outside mlflow-pipeline since the last record.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.audit import (
    KIND_CLI,
    MODEL_TAG_EXPERIMENT,
    AuditTrail,
    Move,
    Why,
    current_user,
    describe,
)
from mlflow_pipeline.errors import ConfigError, RegistryError

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


DEFAULT_ALIASES = Aliases(champion="champion", challenger="challenger", rollback="rollback")


def audit_experiment_of(client: MlflowClient, name: str) -> str:
    """The audit experiment the model's tag names (set at its first recorded move), else the
    default ``<name>-audit``."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        tags = {}
    return tags.get(MODEL_TAG_EXPERIMENT) or f"{name}-audit"


class ModelRegistry:
    """One registered model: read the champion, register versions, move aliases."""

    def __init__(
        self,
        client: MlflowClient,
        name: str,
        aliases: Aliases = DEFAULT_ALIASES,
        audit_experiment: str | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.aliases = aliases
        self.audit = AuditTrail(client, name, audit_experiment or audit_experiment_of(client, name))

    @classmethod
    def from_config(cls, client: MlflowClient, cfg: DictConfig) -> ModelRegistry:
        """The registered model, aliases and audit experiment ``cfg.registry`` names."""
        return cls(
            client,
            cfg.registry.model_name,
            Aliases(
                champion=cfg.registry.champion_alias,
                challenger=cfg.registry.challenger_alias,
                rollback=cfg.registry.rollback_alias,
            ),
            cfg.registry.audit_experiment,
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

    def current_aliases(self) -> dict[str, str | None]:
        """The versions holding champion, challenger and rollback now (None: not set, or no
        such model yet)."""
        names = (self.aliases.champion, self.aliases.challenger, self.aliases.rollback)
        try:
            held = self.client.get_registered_model(self.name).aliases
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"cannot read the aliases of '{self.name}': {exc}") from exc
            held = {}
        return {alias: str(held[alias]) if alias in held else None for alias in names}

    def reconcile(self, *, detected_by: str | None = None) -> list[Move]:
        """Record in the audit trail the alias moves made outside mlflow-pipeline."""
        return self.audit.reconcile(self.current_aliases(), detected_by=detected_by)

    def move_alias(self, alias: str, version: str, why: Why) -> Move | None:
        """Point ``alias`` at ``version`` and record the move with ``why``; None (and nothing
        recorded) when ``alias`` is already there."""
        before = self.version_by_alias(alias)
        before_version = str(before.version) if before is not None else None
        if before_version == str(version):
            return None
        self.set_alias(alias, version)
        return self.audit.record(Move.of(self.name, alias, before_version, str(version), why))

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)


def promote_by_hand(
    client: MlflowClient,
    model_uri: str,
    *,
    reason: str,
    alias: str = DEFAULT_ALIASES.champion,
    rollback_alias: str | None = DEFAULT_ALIASES.rollback,
) -> list[Move]:
    """``mlflow-pipeline promote``: point ``alias`` at the version ``model_uri`` names, as the
    user running it and for ``reason``, recorded in the audit trail.

    Moves made outside mlflow-pipeline since the last record are recorded first. Moving the
    champion also moves ``rollback_alias`` (unless None) to the champion it replaces, as a
    promotion by the pipeline does. Returns the moves recorded (none when ``alias`` is already
    there). Raises ConfigError for an unknown model, alias or version and for an empty reason.
    """
    from mlflow_pipeline.reproduce import resolve_version

    if not reason.strip():
        raise ConfigError("promote needs --reason: the audit trail records why")
    name, version = resolve_version(client, model_uri)
    target = str(version.version)
    registry = ModelRegistry(client, name)
    moves = registry.audit.reconcile({**registry.current_aliases(), alias: _held(registry, alias)})
    why = Why(
        kind=KIND_CLI,
        actor="mlflow-pipeline promote",
        user=current_user(),
        reason=f"{reason.strip()} (as {model_uri})",
    )
    before = _held(registry, alias)
    if alias == DEFAULT_ALIASES.champion and rollback_alias and before not in (None, target):
        rollback = registry.move_alias(
            rollback_alias, before, replace(why, reason=f"the {alias} before v{target}: {reason}")
        )
        moves += [rollback] if rollback else []
    moved = registry.move_alias(alias, target, why)
    return moves + ([moved] if moved else [])


def _held(registry: ModelRegistry, alias: str) -> str | None:
    version = registry.version_by_alias(alias)
    return str(version.version) if version is not None else None


def audit_of(client: MlflowClient, name: str, alias: str | None = None) -> str:
    """``mlflow-pipeline audit``: the recorded moves of ``name``'s aliases (of ``alias``
    only, when given), the aliases now, and the moves made outside mlflow-pipeline that the
    next run will record. Raises ConfigError for an unknown model."""

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        raise ConfigError(f"no registered model '{name}' ({exc.message})") from exc
    registry = ModelRegistry(client, name)
    current = registry.current_aliases()
    if alias is not None:
        current = {alias: _held(registry, alias)}
    return describe(
        registry.audit.moves(alias), current, pending=registry.audit.unrecorded(current)
    )
