"""Reproduce a registered model version: re-run the pipeline that produced it from its recorded
config, with the cache disabled, and compare data digests, metrics and predictions.

The recorded facts come from the version's lineage (``lineage.json`` of its register run). The
re-run stops before ``register``: a reproduction never registers or promotes anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import METRICS, PipelineConfig, Task, check_config
from mlflow_pipeline.engine.pipeline import load_pipeline
from mlflow_pipeline.errors import PipelineError
from mlflow_pipeline.redaction import is_redacted
from mlflow_pipeline.registry.model_registry import resolve_version
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.store.tracking import activate, code_version
from mlflow_pipeline.tags import Lineage, Runs

# Outputs that describe rather than carry data (drift depends on today's champion): not compared.
NOT_COMPARED = ("model", "promotion", "lineage", "metrics", "drift", "drift_metrics")


@dataclass
class Reproduction:
    model_uri: str
    version: str
    original_pipeline_run_id: str
    pipeline_run_id: str
    # (what, recorded, reproduced) for every compared item, and those that differ.
    compared: list[tuple[str, Any, Any]] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


def recorded_config(
    lineage: dict[str, Any], tracking_uri: str, *, allow_unsafe: bool = False
) -> DictConfig:
    """The config recorded in ``lineage``, typed again, run against ``tracking_uri`` with the
    cache recomputing every stage and without the pipeline's register stage.

    What the recording cannot decide is set here: whether unsafe models load (``allow_unsafe``,
    never the recorded value: the lineage artifact is as writable as the model), and no webhook
    whose URL was redacted when it was recorded ($MLFLOW_PIPELINE_ALERT_WEBHOOK still works).
    """
    recorded = OmegaConf.create(lineage["config"])
    cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig), recorded)
    cfg.tracking.uri = tracking_uri
    cfg.registry.allow_unsafe_models = allow_unsafe
    if is_redacted(cfg.alerts.webhook):
        cfg.alerts.webhook = None
    cfg.cache.policy = "recompute"
    cfg.cache.stages = {}
    pipeline = load_pipeline(cfg)
    cfg.steps = [s.name for s in pipeline.order() if s.name != pipeline.register_stage]
    cfg.runner.upstream_run_id = None
    cfg.runner.mode = "in_process"
    # Reproducing is not gating today's data: no drift check against today's champion.
    cfg.validation.drift.policy = "off"
    check_config(cfg)
    return cfg


def reproduce(model_uri: str, tracking_uri: str, *, allow_unsafe: bool = False) -> Reproduction:
    """Re-run what produced ``model_uri`` and compare it with what was recorded. Models load
    only from formats we trust unless ``allow_unsafe`` (store.artifacts.load_trusted_model)."""
    from mlflow_pipeline.engine.runner import run_pipeline
    from mlflow_pipeline.store.tracking import Tracking

    activate(Tracking(uri=tracking_uri, artifact_root=None))
    client = MlflowClient()
    name, version = resolve_version(client, model_uri)
    artifact = version.tags.get(Lineage.ARTIFACT)
    if not artifact:
        raise PipelineError(
            f"{model_uri} (v{version.version}) has no lineage (tag {Lineage.ARTIFACT}); it was not "
            "registered by this pipeline's register stage"
        )
    lineage = json.loads(mlflow.artifacts.load_text(artifact))
    # Before re-running anything: a model we would refuse to load is refused now.
    original = artifacts.load_trusted_model(
        f"models:/{name}/{version.version}", allow_unsafe=allow_unsafe
    )
    cfg = recorded_config(lineage, tracking_uri, allow_unsafe=allow_unsafe)
    # The thread count the model was fitted with (engine/threads.py): a BLAS reduction's
    # result depends on it in the last bit.
    fitted_with = client.get_run(lineage["stages"]["train"]["run_id"]).data.params.get("threads")
    if fitted_with:
        cfg.runner.threads = int(fitted_with)
    result = run_pipeline(cfg, [])
    client.set_tag(result.pipeline_run_id, Runs.REPRODUCES, f"{model_uri} (v{version.version})")
    report = Reproduction(
        model_uri=model_uri,
        version=version.version,
        original_pipeline_run_id=str(lineage["pipeline_run_id"]),
        pipeline_run_id=result.pipeline_run_id,
    )
    commit = code_version().get(Runs.GIT_COMMIT)
    recorded_commit = lineage["code_version"]["commit"]
    if recorded_commit and commit and commit != recorded_commit:
        report.notes.append(f"code is at commit {commit}; the model was built at {recorded_commit}")
    if lineage["code_version"].get("dirty"):
        report.notes.append("the model was built from a checkout with uncommitted changes")
    _compare_digests(client, lineage, result.stage_run_ids, report)
    _compare_metrics(client, lineage, result.stage_run_ids, cfg, report)
    _compare_predictions(client, lineage, original, result.stage_run_ids, report, allow_unsafe, cfg)
    return report


def _compare_digests(
    client: MlflowClient, lineage: dict, runs: dict[str, str], report: Reproduction
) -> None:
    now: dict[str, str] = {}
    for run_id in runs.values():
        for key, value in client.get_run(run_id).data.tags.items():
            if key.startswith(Runs.DIGEST_OUTPUT):
                now[key.removeprefix(Runs.DIGEST_OUTPUT)] = value
    for dataset, recorded in lineage["data_digests"].items():
        if dataset in NOT_COMPARED or dataset.endswith("_report"):
            continue  # a model's digest names its run; metrics are compared as numbers
        _check(report, f"data {dataset} digest", recorded, now.get(dataset))


def _compare_metrics(
    client: MlflowClient, lineage: dict, runs: dict[str, str], cfg: DictConfig, report: Reproduction
) -> None:
    recorded = client.get_run(lineage["stages"]["evaluate"]["run_id"]).data.metrics
    now = client.get_run(runs["evaluate"]).data.metrics
    for metric in METRICS[Task(cfg.data.task).value]:
        if metric in recorded:
            _check(report, f"metric {metric}", recorded[metric], now.get(metric))


def _compare_predictions(
    client: MlflowClient,
    lineage: dict,
    original: Any,
    runs: dict[str, str],
    report: Reproduction,
    allow_unsafe: bool,
    cfg: DictConfig,
) -> None:
    """Both models on the recorded test set: predictions (and probabilities) bit for bit."""
    from mlflow_pipeline.stages.train import model_columns

    test = artifacts.load_frame(lineage["stages"]["split"]["run_id"], "test")
    uri = client.get_run(runs["train"]).data.tags[Runs.MODEL_URI]
    rebuilt = artifacts.load_trusted_model(uri, allow_unsafe=allow_unsafe)
    features = test[model_columns(original, cfg, test)]
    for method in ("predict", "predict_proba"):
        if hasattr(original, method) and hasattr(rebuilt, method):
            before = np.asarray(getattr(original, method)(features))
            after = np.asarray(getattr(rebuilt, method)(features))
            same = before.shape == after.shape and np.array_equal(before, after)
            detail = "identical" if same else _largest_difference(before, after)
            report.compared.append((f"{method} on {len(features)} test rows", "recorded", detail))
            if not same:
                report.differences.append(f"{method} on the recorded test set: {detail}")


def _largest_difference(before: np.ndarray, after: np.ndarray) -> str:
    if before.shape != after.shape:
        return f"shape {before.shape} -> {after.shape}"
    if before.dtype.kind in "fc" and after.dtype.kind in "fc":
        return f"max abs difference {np.max(np.abs(before - after)):.3g}"
    return f"{int(np.sum(before != after))} of {before.size} differ"


def _check(report: Reproduction, what: str, recorded: Any, now: Any) -> None:
    report.compared.append((what, recorded, now))
    same = recorded == now or (
        isinstance(recorded, float)
        and isinstance(now, float)
        and math.isnan(recorded)
        and math.isnan(now)
    )
    if not same:
        report.differences.append(f"{what}: recorded {recorded}, reproduced {now}")


def describe(report: Reproduction) -> str:
    lines = [
        f"reproduced {report.model_uri} (v{report.version}, pipeline run "
        f"{report.original_pipeline_run_id}) as pipeline run {report.pipeline_run_id}"
    ]
    for what, recorded, now in report.compared:
        mark = "same" if f"{what}:" not in " ".join(report.differences) else "DIFFERS"
        if recorded == "recorded":
            lines.append(f"  {what}: {now}")
        else:
            lines.append(f"  {what}: {mark} ({_short(recorded)} -> {_short(now)})")
    lines += [f"  note: {note}" for note in report.notes]
    verdict = "IDENTICAL" if report.identical else f"{len(report.differences)} difference(s)"
    lines.append(f"result: {verdict}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 else text
