"""The reference pipeline's stage specs, and stage order derived from declared inputs/outputs."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

import pandera.pandas as pa
from omegaconf import DictConfig

from mlflow_pipeline import schemas
from mlflow_pipeline.engine.stage import Dataset, Stage
from mlflow_pipeline.errors import ConfigError, StageError
from mlflow_pipeline.registry.audit import iso
from mlflow_pipeline.stages.evaluate import check_thresholds, evaluate
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.profile import check_drift, profile_data
from mlflow_pipeline.stages.profile import reference as champion_profile
from mlflow_pipeline.stages.register import register
from mlflow_pipeline.stages.split import split
from mlflow_pipeline.stages.train import train
from mlflow_pipeline.stages.validate import validate_data


def _contract_schema(cfg: DictConfig, contract: pa.DataFrameSchema | None) -> schemas.Gate:
    if contract is None:
        raise StageError("no data contract to validate against (is 'contract' an input?)")
    return schemas.gate(contract, cfg)


def _champion_profile(cfg: DictConfig, services: dict) -> dict[str, str]:
    """The profile stage reads the champion's training profile: part of its cache key."""
    if cfg.validation.drift.policy == "off":
        return {}
    return {"champion profile": champion_profile(services["registry"]).key}


def _alias_moves_outside(cfg: DictConfig, services: dict) -> dict[str, str]:
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
    return {
        "alias moves made outside mlflow-pipeline": "; ".join(
            f"{m.title} (after the record of {iso(m.moved_after_ms, milliseconds=True)})"
            for m in moves
        )
    }


RAW = Dataset("raw", schema=lambda cfg, _: schemas.raw_schema(cfg.data.target))
PROFILE = Dataset("profile", kind="text", filename="profile.json")
DRIFT = Dataset("drift", kind="text", filename="drift.json")
DRIFT_METRICS = Dataset(
    "drift_metrics", schema=lambda *_: schemas.Metrics.to_schema(), log_as_metrics=True
)
PROFILE_REPORT = Dataset("profile_report", kind="text", filename="reports/profile.html")
CONTRACT = Dataset("contract", kind="text", filename="contract.yaml")
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

STAGES: tuple[Stage, ...] = (
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
        services=("registry",),
        context=_champion_profile,
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
)


def producers(stages: tuple[Stage, ...] = STAGES) -> dict[str, Stage]:
    """Dataset name -> the stage that outputs it."""
    return {d.name: s for s in stages for d in s.outputs}


def order(steps: list[str] | tuple[str, ...], stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The selected stages in dependency order. Raises ConfigError for unknown names."""
    by_name = {s.name: s for s in stages}
    unknown = [s for s in steps if s not in by_name]
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown}; choose from {', '.join(by_name)}")
    made_by = producers(stages)
    graph = {
        s.name: {made_by[d.name].name for d in (*s.inputs, *s.schema_inputs) if d.name in made_by}
        for s in stages
    }
    try:
        ordered = list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise ConfigError(f"stage dependencies form a cycle: {exc.args[1]}") from exc
    return [by_name[name] for name in ordered if name in steps]


def stage_named(name: str, stages: tuple[Stage, ...] = STAGES) -> Stage:
    for stage in stages:
        if stage.name == name:
            return stage
    raise ConfigError(f"unknown stage '{name}'; choose from {', '.join(s.name for s in stages)}")
