"""What the reference pipeline's declaration (``conf/pipeline/reference.yaml``) names besides
its stage functions: the schemas of its datasets, and the outside facts two of its stages read
(the champion's training profile; the champion and alias moves made outside mlflow-pipeline),
resolved by the engine and passed in.
"""

from __future__ import annotations

import json

import pandera.pandas as pa
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from mlflow_pipeline import schemas
from mlflow_pipeline.engine.spec import Context
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.registry.audit import KIND_CLI, iso
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.stages.profile import PROFILE_FILE, ChampionProfile
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.tags import Lineage, Runs


def contract_schema(cfg: DictConfig, contract: pa.DataFrameSchema | None) -> schemas.Gate:
    """A frame after validate: the data contract with the gate's rules."""
    if contract is None:
        raise StageError("no data contract to validate against (is 'contract' an input?)")
    return schemas.gate(contract, cfg)


def raw_schema(cfg: DictConfig, contract: pa.DataFrameSchema | None) -> pa.DataFrameSchema:
    """Ingest's output: any columns, the target among them."""
    return schemas.raw_schema(cfg.data.target)


def metrics_schema(cfg: DictConfig, contract: pa.DataFrameSchema | None) -> pa.DataFrameSchema:
    """(metric, value) rows."""
    return schemas.Metrics.to_schema()


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


def champion_profile_context(cfg: DictConfig, services: dict) -> dict[str, Context]:
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


def champion_and_alias_moves(cfg: DictConfig, services: dict) -> dict[str, Context]:
    """register compares with whatever holds champion now: that version is part of its cache
    key (a register run is reused while the champion is the one it compared with or left, not
    after another run moved it), and so is an alias move made outside mlflow-pipeline (the UI)
    since the last record, so the next run reruns it (records the move, compares with the
    human's champion) instead of reusing a decision made against the old champion."""
    registry = services["registry"]
    current = registry.current_aliases()
    moves = registry.audit.unrecorded(current)
    champion = current.get(registry.aliases.champion)
    contexts = {
        "champion": Context(
            f"{registry.name} v{champion}" if champion is not None else "no champion"
        )
    }
    if moves:
        # The alias's last record makes the key unique: the same move made again later (v3 ->
        # v1, recorded, back to v3 by a run, v3 -> v1 again) must not hit the first rerun.
        key = "; ".join(
            f"{m.title} (after the record of {iso(m.moved_after_ms, milliseconds=True)})"
            for m in moves
        )
        contexts["alias moves made outside mlflow-pipeline"] = Context(key)
    # A move made with `mlflow-pipeline promote` is recorded, so it is not "outside"; but it
    # too chose a champion no register run has compared with: while it is the alias's last
    # record, it is part of the key (stable, so the run after the comparison hits).
    outside = {m.alias for m in moves}
    by_hand = []
    for alias, version in current.items():
        last = None if alias in outside else registry.audit.last(alias)
        if last is not None and last.kind == KIND_CLI and last.to_version == version:
            by_hand.append(f"{alias} -> v{version} ({iso(last.time_ms, milliseconds=True)})")
    if by_hand:
        contexts["alias moves made with mlflow-pipeline promote"] = Context("; ".join(by_hand))
    return contexts
