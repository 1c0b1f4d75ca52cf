"""``--dry-run``: what running the pipeline would do, stage by stage, without running anything."""

from __future__ import annotations

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.inputs import resolve_inputs
from mlflow_pipeline.engine.pipeline import load_pipeline, selected_stages
from mlflow_pipeline.engine.services import run_context
from mlflow_pipeline.engine.stage import Handoff, cache_decision, contexts_of
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.store.tracking import activate, resolve_tracking, retry_transient
from mlflow_pipeline.tags import Runs


def plan(cfg: DictConfig) -> list[cache.CacheDecision]:
    """What running ``cfg.steps`` would do, stage by stage: a hit (and the run it reuses) or a
    miss and why. Stages downstream of a miss are 'pending'."""
    pipeline = load_pipeline(cfg)
    activate(resolve_tracking(cfg))
    client = retry_transient(MlflowClient)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    experiment_id = experiment.experiment_id if experiment else None
    ctx = run_context(
        client,
        cfg,
        pipeline,
        experiment_id=experiment_id or "",
        pipeline_run_id=None,
        runner_mode=cfg.runner.mode,
        upstream_run_id=cfg.runner.upstream_run_id,
    )
    made_by = pipeline.producers()
    available: dict[str, Handoff] = {}
    recomputed: set[str] = set()
    decisions = []
    for stage in selected_stages(pipeline, cfg):
        pending = tuple(d.name for d in stage.reads if made_by[d.name].name in recomputed)
        if experiment_id is None:
            reasons = ["no earlier run (new experiment)"]
            decision = cache.CacheDecision(stage.name, "miss", None, reasons)
        elif pending:  # what is known already: the contexts (the champion's profile, ...)
            known = {name: c.key for name, c in contexts_of(stage, cfg, ctx).items()}
            decision = cache.decide(stage, cfg, client, experiment_id, known, pending=pending)
        else:
            try:
                available.update(resolve_inputs(stage, cfg, ctx, available))
                decision = cache_decision(stage, cfg, ctx, available)
            except StageError as exc:
                decision = cache.CacheDecision(stage.name, "error", None, [str(exc)])
        decisions.append(decision)
        if decision.hit:
            source = client.get_run(decision.source_run_id)
            for dataset in stage.outputs:
                available[dataset.name] = Handoff(
                    run_id=source.info.run_id,
                    digest=source.data.tags.get(Runs.DIGEST_OUTPUT + dataset.name),
                )
        else:
            recomputed.add(stage.name)
    return decisions


def describe_plan(decisions: list[cache.CacheDecision]) -> str:
    """One line per stage: its name, hit or why it runs, in aligned columns."""
    rows = []
    for decision in decisions:
        if decision.hit:
            rows.append((decision.stage, "hit", f"reuses run {decision.source_run_id}"))
        else:
            status = "runs" if decision.status == "pending" else decision.status
            rows.append((decision.stage, status, "; ".join(decision.reasons)))
    stage = max([9, *(len(r[0]) for r in rows)])
    status = max([5, *(len(r[1]) for r in rows)])
    return "\n".join(f"{a:<{stage}} {b:<{status}} {c}".rstrip() for a, b, c in rows)
