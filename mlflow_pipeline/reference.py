"""The reference pipeline, declared as data: ingest -> profile -> validate -> split -> train ->
evaluate -> register, and the outside facts two of its stages read (the champion's training
profile, alias moves made outside mlflow-pipeline), resolved by the engine and passed in.

The engine runs it like any other ``Pipeline``; ``conf/config.yaml`` names it
(``pipeline: mlflow_pipeline.reference:PIPELINE``).
"""

from __future__ import annotations

import json

import pandera.pandas as pa
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from mlflow_pipeline import schemas
from mlflow_pipeline.engine.spec import Context, Dataset, Pipeline, Stage
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.registry.audit import iso
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.stages.evaluate import check_thresholds, evaluate
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.profile import PROFILE_FILE, ChampionProfile, check_drift, profile_data
from mlflow_pipeline.stages.register import register
from mlflow_pipeline.stages.split import split
from mlflow_pipeline.stages.train import train
from mlflow_pipeline.stages.validate import validate_data
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.tags import Lineage, Runs


def _contract_schema(cfg: DictConfig, contract: pa.DataFrameSchema | None) -> schemas.Gate:
    if contract is None:
        raise StageError("no data contract to validate against (is 'contract' an input?)")
    return schemas.gate(contract, cfg)


def champion_profile(registry: ModelRegistry) -> ChampionProfile:
    """Where the profile of the data the champion was trained on is (its lineage tags name
    the profile run), or why there is none. Its content is read only when profile runs."""
    alias = registry.aliases.champion
    champion = registry.champion()
    if champion is None:
        return ChampionProfile(reason=f"no {alias} yet")
    version = str(champion.version)
    run_id = (champion.tags or {}).get(Lineage.RUN_PREFIX + "profile")
    if not run_id:
        return ChampionProfile(
            reason=f"{alias} v{version} has no training profile (registered before profiling)"
        )
    try:
        tags = registry.client.get_run(run_id).data.tags
    except MlflowException:
        return ChampionProfile(
            reason=f"{alias} v{version}'s profile run {run_id} is not in this store"
        )
    about = {"model": registry.name, "version": version, "alias": alias, "profile_run": run_id}
    return ChampionProfile(
        about=about, run_id=run_id, digest=tags.get(f"{Runs.DIGEST_OUTPUT}profile")
    )


def _champion_profile_context(cfg: DictConfig, services: dict) -> dict[str, Context]:
    """profile compares today's data with the champion's training profile: which profile is
    part of its cache key, and its content is passed in when the stage runs."""
    if cfg.validation.drift.policy == "off":
        return {}
    found = champion_profile(services["registry"])

    def load() -> ChampionProfile:
        if found.run_id is None:
            return found
        text = artifacts.load_text(found.run_id, PROFILE_FILE)
        return ChampionProfile(found.about, found.run_id, found.digest, profile=json.loads(text))

    return {"champion profile": Context(found.key, argument="champion", load=load)}


def _alias_moves_outside(cfg: DictConfig, services: dict) -> dict[str, Context]:
    """register compares with whatever holds champion now: an alias move made outside
    mlflow-pipeline (the UI) since the last record is part of its cache key, so the next run
    reruns it (records the move, compares with the human's champion) instead of reusing a
    decision made against the old champion."""
    registry = services["registry"]
    moves = registry.audit.unrecorded(registry.current_aliases())
    if not moves:
        return {}
    # The alias's last record makes the key unique: the same move made again later (v3 -> v1,
    # recorded, back to v3 by a run, v3 -> v1 again) must not hit the first rerun.
    key = "; ".join(
        f"{m.title} (after the record of {iso(m.moved_after_ms, milliseconds=True)})" for m in moves
    )
    return {"alias moves made outside mlflow-pipeline": Context(key)}


RAW = Dataset("raw", schema=lambda cfg, _: schemas.raw_schema(cfg.data.target))
PROFILE = Dataset("profile", kind="text", filename="profile.json")
DRIFT = Dataset("drift", kind="text", filename="drift.json")
DRIFT_METRICS = Dataset(
    "drift_metrics", schema=lambda *_: schemas.Metrics.to_schema(), log_as_metrics=True
)
PROFILE_REPORT = Dataset("profile_report", kind="text", filename="reports/profile.html")
CONTRACT = Dataset("contract", kind="text", filename="contract.yaml", contract=True)
VALIDATION_REPORT = Dataset("validation_report", kind="text", filename="reports/validation.html")
QUARANTINE = Dataset("quarantine", kind="text", filename="quarantine/raw.csv", optional=True)
WARNINGS = Dataset("warnings", kind="text", filename="warnings/raw.csv", optional=True)
VALIDATED = Dataset("validated", schema=_contract_schema)
TRAIN = Dataset("train", schema=_contract_schema)
TEST = Dataset("test", schema=_contract_schema)
MODEL = Dataset("model", kind="model")
METRICS = Dataset("metrics", schema=lambda *_: schemas.Metrics.to_schema(), log_as_metrics=True)
PROMOTION = Dataset("promotion", kind="text", filename="promotion.json")
LINEAGE = Dataset("lineage", kind="text", filename="lineage.json")
EVALUATION_REPORT = Dataset("evaluation_report", kind="text", filename="reports/evaluation.html")
PROMOTION_REPORT = Dataset("promotion_report", kind="text", filename="reports/promotion.html")

PIPELINE = Pipeline(
    "reference",
    (
        Stage(
            "ingest",
            ingest,
            outputs=(RAW,),
            config_keys=("data",),
            file_keys=("data.path",),
            packages=("scikit-learn",),  # bundled datasets
        ),
        Stage(
            "profile",
            profile_data,
            inputs=(RAW,),
            outputs=(PROFILE, DRIFT, DRIFT_METRICS, PROFILE_REPORT),
            gate=check_drift,
            context=_champion_profile_context,
            config_keys=("data", "validation", "registry"),
            file_keys=("data.path",),
            packages=("scipy", "matplotlib"),
        ),
        Stage(
            "validate",
            validate_data,
            inputs=(RAW,),
            # Not read: validate runs after profile's drift gate, and lineage reaches the profile.
            schema_inputs=(PROFILE,),
            outputs=(CONTRACT, VALIDATED, VALIDATION_REPORT, QUARANTINE, WARNINGS),
            config_keys=("data", "validation"),
            file_keys=("data.path", "data.schema"),
        ),
        Stage(
            "split",
            split,
            inputs=(VALIDATED,),
            schema_inputs=(CONTRACT,),
            outputs=(TRAIN, TEST),
            config_keys=("data", "split"),
            file_keys=("data.path", "data.schema"),
            seed_keys=("split.random_state",),
            packages=("scikit-learn",),
        ),
        Stage(
            "train",
            train,
            inputs=(TRAIN,),
            schema_inputs=(CONTRACT,),
            outputs=(MODEL,),
            config_keys=("data", "features", "model", "seed"),
            file_keys=("data.path", "data.schema"),
            seed_keys=("model.random_state",),
            packages=("scikit-learn", "scipy", "skops", "mlflow"),
        ),
        Stage(
            "evaluate",
            evaluate,
            inputs=(MODEL, TEST),
            schema_inputs=(CONTRACT,),
            outputs=(METRICS, EVALUATION_REPORT),
            gate=check_thresholds,
            config_keys=("data", "evaluation"),
            file_keys=("data.path", "data.schema"),
            packages=("scikit-learn", "scipy"),
        ),
        Stage(
            "register",
            register,
            inputs=(MODEL, TEST, METRICS),
            schema_inputs=(CONTRACT,),
            outputs=(PROMOTION, LINEAGE, PROMOTION_REPORT),
            services=("registry", "pipeline_run_id", "stage_run_id", "lineage"),
            context=_alias_moves_outside,
            config_keys=("data", "registry", "promotion"),
            file_keys=("data.path", "data.schema"),
            packages=("scikit-learn", "scipy", "mlflow"),
        ),
    ),
    metrics_stage="evaluate",
    register_stage="register",
    promotion_output="promotion",
    drift_output="drift",
)
