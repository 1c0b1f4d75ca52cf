"""The model registry: one registered model's versions, aliases and their audit trail.

Promotion is an alias move (``challenger`` -> ``champion``, see promotion.py), never a registry
stage; whatever holds ``champion`` now, including a version a human chose in the UI, is what
the rule compares. Every move made here is recorded in the model's audit trail (audit.py),
which also records the moves made outside mlflow-pipeline since the last record. A model is
registered once: a version records its content digest (digest.py), and ``version_with`` finds
an existing version of the same model.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.errors import ConfigError, RegistryError
from mlflow_pipeline.registry.audit import AuditTrail, Move, Why, describe, quoted
from mlflow_pipeline.registry.digest import content_digest as digest_of
from mlflow_pipeline.registry.failpoint import failpoint
from mlflow_pipeline.registry.lock import process_alive
from mlflow_pipeline.registry.overlap import training_inputs
from mlflow_pipeline.store.lineage import ARTIFACT as LINEAGE_ARTIFACT
from mlflow_pipeline.store.tracking import experiment_location, resolve_tracking
from mlflow_pipeline.tags import Audit, Lineage, Promotion, Registry, Runs

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Aliases:
    champion: str
    challenger: str
    rollback: str


DEFAULT_ALIASES = Aliases(champion="champion", challenger="challenger", rollback="rollback")
# Aliases MLflow resolves itself (``@latest``) or refuses (``v3``): never moved by hand.
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolve_version(client: MlflowClient, model_uri: str) -> tuple[str, Any]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, ModelVersion).

    Raises ConfigError for a malformed URI or an unknown model, alias or version."""
    match = _MODEL_URI.match(model_uri)
    if not match:
        raise ConfigError(
            f"{model_uri!r} is not a registered model URI: use models:/NAME@ALIAS or "
            "models:/NAME/VERSION"
        )
    name = match["name"]
    try:
        if match["alias"]:
            return name, client.get_model_version_by_alias(name, match["alias"])
        return name, client.get_model_version(name, match["version"])
    except MlflowException as exc:
        raise ConfigError(f"{model_uri}: no such model version ({exc.message})") from exc


class ModelRegistry:
    """One registered model: read the champion, register versions, move aliases."""

    def __init__(
        self,
        client: MlflowClient,
        name: str,
        aliases: Aliases | None = None,
        audit_experiment: str | None = None,
        *,
        audit_location: str | None = None,
    ) -> None:
        """``aliases`` and ``audit_experiment`` None: those the model's audit tags recorded
        (``mlflow-pipeline promote`` and ``audit`` know no config), else the defaults.
        ``audit_location``: the artifact location of an audit experiment created here."""
        self.client = client
        self.name = name
        tags = {} if aliases is not None and audit_experiment else self._model_tags()
        if aliases is None:
            names = [n for n in tags.get(Audit.MODEL_ALIASES, "").split(",") if n]
            aliases = Aliases(*names) if len(names) == 3 else DEFAULT_ALIASES
        self.aliases = aliases
        self.audit = AuditTrail(
            client,
            name,
            audit_experiment or tags.get(Audit.MODEL_EXPERIMENT) or f"{name}-audit",
            experiment_id=None if audit_experiment else tags.get(Audit.MODEL_EXPERIMENT_ID),
            aliases=(aliases.champion, aliases.challenger, aliases.rollback),
            artifact_location=audit_location,
        )

    def _model_tags(self) -> dict[str, str]:
        try:
            return dict(self.client.get_registered_model(self.name).tags)
        except MlflowException:
            return {}

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
            audit_location=experiment_location(
                resolve_tracking(cfg), cfg.registry.audit_experiment
            ),
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

    def load(self, version: str, *, allow_unsafe: bool = False) -> Any:
        """The sklearn model of ``version``, loaded only from a format we trust unless
        ``allow_unsafe`` (registry.allow_unsafe_models). Raises UntrustedModelError."""
        from mlflow_pipeline.store.artifacts import load_trusted_model

        return load_trusted_model(f"models:/{self.name}/{version}", allow_unsafe=allow_unsafe)

    def lineage_of(self, version: ModelVersion) -> dict[str, Any]:
        """The lineage (``lineage.json``) of ``version``. Raises RegistryError when it has none,
        PipelineError (StageError) when it cannot be read."""
        from mlflow_pipeline.store.artifacts import load_text

        uri = (version.tags or {}).get(Lineage.ARTIFACT, "")
        if not uri.startswith("runs:/"):
            raise RegistryError(f"v{version.version} has no lineage (tag {Lineage.ARTIFACT})")
        run_id, _, path = uri[len("runs:/") :].partition("/")
        return json.loads(load_text(run_id, path))

    @staticmethod
    def training_frames(lineage: dict[str, Any], kinds: dict[str, str]) -> list[pd.DataFrame]:
        """The frames the model of ``lineage`` was trained on (``overlap.training_inputs``;
        ``kinds``: each dataset's kind in the pipeline declaration). Raises StageError."""
        from mlflow_pipeline.store.artifacts import load_frame

        inputs = training_inputs(lineage, kinds)
        return [load_frame(run_id, name) for name, run_id in sorted(inputs.items())]

    def content_digest(self, model_uri: str) -> str:
        """The content digest of the model at ``model_uri`` (see digest.py). Raises
        RegistryError when it cannot be read."""
        try:
            return digest_of(model_uri)
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot read the model {model_uri} to digest it: {exc}") from exc

    def version_with(self, content_digest: str, model_uri: str) -> ModelVersion | None:
        """The oldest version of this model holding the same model: the same content digest,
        or registered from ``model_uri`` itself (versions registered before digests were
        recorded). None when there is none (or no such registered model yet)."""
        try:
            versions = self.client.search_model_versions(f"name = {quoted(self.name)}")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryError(f"cannot list the versions of '{self.name}': {exc}") from exc
        matches = [
            v
            for v in versions
            if (v.tags or {}).get(Registry.CONTENT_DIGEST) == content_digest
            or v.source == model_uri
        ]
        return min(matches, key=lambda v: int(v.version)) if matches else None

    def decided_by_a_dead_run(self, version: ModelVersion) -> str | None:
        """The register run whose decision ``version``'s promotion tags hold, when that run
        did not finish and will not (FAILED, KILLED, its process gone, or deleted): a rerun
        takes its decision over. None when it finished or is still running (another run's
        decision), or when the tags name no run."""
        run_id = (version.tags or {}).get(Promotion.STAGE_RUN)
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return run_id  # deleted, or never a run of this store
        if run.info.status == "FINISHED":
            return None
        tags = run.data.tags
        if run.info.status == "RUNNING":
            if tags.get(Runs.HOST) != socket.gethostname():  # cannot tell: taken as alive
                return None
            if process_alive(tags.get(Runs.PID, ""), tags.get(Runs.PID_STARTED, "")):
                return None
        return run_id

    def register(self, model_uri: str, tags: dict[str, str]) -> ModelVersion:
        """Register ``model_uri`` as a new version of this model."""
        try:
            version = mlflow.register_model(model_uri, self.name, tags=tags)
        except MlflowException as exc:
            raise RegistryError(f"cannot register {model_uri} as '{self.name}': {exc}") from exc
        failpoint("registered")
        return version

    def set_alias(self, alias: str, version: str) -> None:
        try:
            self.client.set_registered_model_alias(self.name, alias, version)
        except MlflowException as exc:
            raise RegistryError(
                f"cannot set alias '{alias}' on '{self.name}' version {version}: {exc}"
            ) from exc

    def current_aliases(
        self, extra: str | None = None, *, missing_model_ok: bool = True
    ) -> dict[str, str | None]:
        """The versions holding champion, challenger, rollback (and ``extra``) now; None: not
        set, or no such model yet (a RegistryError instead unless ``missing_model_ok``)."""
        names = [self.aliases.champion, self.aliases.challenger, self.aliases.rollback]
        names += [extra] if extra and extra not in names else []
        try:
            held = self.client.get_registered_model(self.name).aliases
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST" or not missing_model_ok:
                raise RegistryError(f"cannot read the aliases of '{self.name}': {exc}") from exc
            held = {}
        return {alias: str(held[alias]) if alias in held else None for alias in names}

    def move_alias(self, alias: str, version: str, why: Why) -> Move | None:
        """Point ``alias`` at ``version`` and record the move with ``why``; None (and nothing
        recorded) when ``alias`` is already there. One move, with neither the promotion lock
        nor a plan: promotions go through ``promotion.promotion_session``."""
        before = self.version_by_alias(alias)
        before_version = str(before.version) if before is not None else None
        if before_version == str(version):
            return None
        self.set_alias(alias, version)
        return self.audit.record(Move.of(self.name, alias, before_version, str(version), why))

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)


def audit_of(client: MlflowClient, name: str, alias: str | None = None) -> str:
    """``mlflow-pipeline audit``: the recorded moves of ``name``'s aliases (of ``alias``
    only, when given), the aliases now, and the moves made outside mlflow-pipeline that the
    next run will record; a promotion a crash interrupted is shown as such (the next
    promotion finishes it), not as moves made outside. Raises ConfigError for an unknown
    model."""
    registry = ModelRegistry(client, name)
    try:
        current = registry.current_aliases(alias, missing_model_ok=False)
    except RegistryError as exc:
        raise ConfigError(f"no registered model '{name}'") from exc
    if alias is not None:
        current = {alias: current[alias]}
    interrupted = _interrupted_steps(registry, alias)
    pending = [m for m in registry.audit.unrecorded(current) if m.alias not in interrupted]
    text = describe(registry.audit.moves(alias), current, pending=pending)
    if interrupted:
        moves = ", ".join(f"{a} -> v{to}" for a, to in interrupted.items())
        text += (
            f"\ninterrupted promotion: {moves} (a killed run's; the next register or promote "
            "of this model finishes and records it)"
        )
    return text


def _interrupted_steps(registry: ModelRegistry, alias: str | None) -> dict[str, str]:
    """Alias -> version of the moves an interrupted promotion planned (plan.py writes the
    plan; only its aliases and targets are read here)."""
    text = registry._model_tags().get(Registry.PLAN)
    try:
        steps = json.loads(text)["steps"] if text else []
        return {
            s["alias"]: str(s["to_version"]) for s in steps if alias is None or s["alias"] == alias
        }
    except (ValueError, KeyError, TypeError):
        return {}


# The stage runs a version names in tags, because code reads them from the version: the
# champion's training profile (reference.champion_profile), its data contract (validate) and
# training set (split) for scoring (apps.score). Every other stage is in the lineage artifact.
TAGGED_STAGE_RUNS = ("profile", "validate", "split")


def lineage_tags(lineage: dict[str, Any]) -> dict[str, str]:
    """The model version tags of ``lineage``: where its lineage artifact is, and the stage runs
    of ``TAGGED_STAGE_RUNS`` it has. The rest (pipeline run, every stage run, data digests,
    config digest, code version, packages) is in the artifact only, which ``reproduce`` reads:
    a version row in the UI stays a few lines."""
    tags = {Lineage.ARTIFACT: f"runs:/{lineage['record_run_id']}/{LINEAGE_ARTIFACT}"}
    for stage in TAGGED_STAGE_RUNS:
        if stage in lineage["stages"]:
            tags[Lineage.RUN_PREFIX + stage] = lineage["stages"][stage]["run_id"]
    return tags


def lineage_json(lineage: dict[str, Any]) -> str:
    """The lineage as the ``lineage.json`` artifact holds it."""
    return json.dumps(lineage, indent=2, sort_keys=True)
