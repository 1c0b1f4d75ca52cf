"""The Stage spec (name, function, typed inputs and outputs) and the ONE run wrapper.

The wrapper starts the stage's MLflow run, tags it, logs its config slice, loads and validates
its inputs, calls the pure stage function, validates and saves its outputs (with digests and row
counts), runs the stage's gate, records wall time and peak memory, and on failure logs the error
(and the failure table) before re-raising. It never swallows an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import mlflow
import pandas as pd
import pandera.pandas as pa
import psutil
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline import schemas
from mlflow_pipeline.config import config_slice, flatten, resolved_yaml
from mlflow_pipeline.data.validation import check
from mlflow_pipeline.engine import cache, threads
from mlflow_pipeline.engine.spec import Context, Dataset, Pipeline, Stage
from mlflow_pipeline.errors import DataValidationError, PipelineError, StageError
from mlflow_pipeline.interrupt import checkpoint
from mlflow_pipeline.redaction import redact_url, redacted
from mlflow_pipeline.reports.validation import validation_report
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.store.tracking import code_version, end_active_run, owner_tags, retry_transient
from mlflow_pipeline.tags import Cache, Env, MLflow, Runs

log = logging.getLogger(__name__)
_failpoint_counts: dict[str, int] = {}


@dataclass
class Handoff:
    """A dataset's value in memory (if this process has it) and the run that logged it.

    ``digest`` is its content digest (a model's stands for the run that trained it). For a frame
    that passed its schema on the way out, ``digest`` and ``schema_key`` let the next stage skip
    validating it again when its content is provably unchanged.
    """

    run_id: str
    value: Any = None
    digest: str | None = None
    schema_key: tuple | None = None


@dataclass
class RunContext:
    client: MlflowClient
    pipeline: Pipeline
    experiment_id: str
    # None for a stage run on its own (a stage project run without a pipeline).
    pipeline_run_id: str | None
    runner_mode: str
    # Read inputs not produced in this pipeline run from this earlier pipeline run.
    upstream_run_id: str | None = None
    # Keyword arguments stages ask for by name (Stage.services): a value, or a RunService that
    # makes the value for the stage run at hand.
    services: dict[str, Any] = field(default_factory=dict)
    # Filled as stages run: stage name -> its run in this pipeline (computed or hit), and the
    # cache decision taken for it.
    stage_runs: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, cache.CacheDecision] = field(default_factory=dict)
    # Stage name -> what it reads from outside the pipeline, resolved once (Stage.context).
    contexts: dict[str, dict[str, Context]] = field(default_factory=dict)
    # Stage name -> wall seconds in this pipeline run (a hit's too).
    durations: dict[str, float] = field(default_factory=dict)
    # How busy other processes keep the CPUs, for runner.threads=auto (engine/threads.py).
    cpu_monitor: threads.CpuMonitor | None = field(default_factory=threads.CpuMonitor)


@dataclass(frozen=True)
class StageCall:
    """One run of a stage: what a RunService makes its value from."""

    stage: Stage
    cfg: DictConfig
    ctx: RunContext
    available: dict[str, Handoff]
    run_id: str


@dataclass(frozen=True)
class RunService:
    """A service whose value depends on the stage run (its run id, its lineage)."""

    make: Callable[[StageCall], Any]


def run_stage(
    stage: Stage,
    cfg: DictConfig,
    ctx: RunContext,
    available: dict[str, Handoff],
    *,
    run_id: str | None = None,
    decision: cache.CacheDecision | None = None,
) -> dict[str, Handoff]:
    """Run ``stage`` as a child run of the pipeline run and return its outputs, or reuse the
    outputs of an earlier run with the same cache key (a hit: the child run records that).

    ``available`` holds datasets already in memory; other inputs are read from the producing
    stage's run. ``run_id`` resumes a run created for us (``mlflow run`` of a stage project).
    ``decision``: the cache decision when the caller made it already.
    Raises whatever the stage raised, after marking the run FAILED.
    """
    started = time.perf_counter()
    checkpoint()
    try:
        return _run_or_reuse(stage, cfg, ctx, available, run_id=run_id, decision=decision)
    finally:
        ctx.durations[stage.name] = time.perf_counter() - started


def _run_or_reuse(
    stage: Stage,
    cfg: DictConfig,
    ctx: RunContext,
    available: dict[str, Handoff],
    *,
    run_id: str | None,
    decision: cache.CacheDecision | None,
) -> dict[str, Handoff]:
    if decision is None:
        decision = retry_transient(cache_decision, stage, cfg, ctx, available, what="cache")
    log.info(decision.describe())
    ctx.decisions[stage.name] = decision
    if decision.hit:
        return record_hit(stage, ctx, decision, available, run_id=run_id)
    tags = {
        **stage_tags(stage, ctx),
        Cache.STATUS: decision.status,
        Cache.REASON: "; ".join(decision.reasons)[:5000],
    }
    if decision.key:
        tags[Cache.KEY] = decision.key
    if run_id is None:
        run = mlflow.start_run(
            experiment_id=ctx.experiment_id,
            run_name=stage.name,
            nested=True,
            parent_run_id=ctx.pipeline_run_id,
            tags=tags,
        )
    else:
        run = mlflow.start_run(run_id=run_id)
        mlflow.set_tags(tags)
    stage_run_id = run.info.run_id
    ctx.stage_runs[stage.name] = stage_run_id
    try:
        outputs = _run_in_active_run(stage, cfg, ctx, available, stage_run_id, decision)
    except BaseException as exc:
        _record_failure(ctx.client, stage, stage_run_id, exc)
        end_active_run(exc)
        raise
    end_active_run()
    return outputs


def stage_tags(stage: Stage, ctx: RunContext) -> dict[str, str]:
    """The tags of every run of ``stage``: what it is, where it belongs, who runs it."""
    tags = {
        Runs.KIND: "stage",
        Runs.STAGE: stage.name,
        Runs.RUNNER_MODE: ctx.runner_mode,
        **code_version(),
        **owner_tags(),
    }
    if ctx.pipeline_run_id:
        tags.update({Runs.PIPELINE_RUN: ctx.pipeline_run_id, MLflow.PARENT: ctx.pipeline_run_id})
    return tags


def cache_decision(
    stage: Stage,
    cfg: DictConfig,
    ctx: RunContext,
    available: dict[str, Handoff],
    *,
    pending: tuple[str, ...] = (),
) -> cache.CacheDecision:
    """The cache decision for ``stage`` with these inputs (see cache.decide)."""
    tags: dict[str, dict[str, str]] = {}

    def tags_of(run_id: str) -> dict[str, str]:
        if run_id not in tags:
            try:
                tags[run_id] = ctx.client.get_run(run_id).data.tags
            except MlflowException:  # not in this store: its digest is unknown
                tags[run_id] = {}
        return tags[run_id]

    names = [d.name for d in stage.reads]
    digests = cache.input_digests(
        stage,
        {n: available[n].run_id for n in names if n in available},
        {n: available[n].digest for n in names if n in available},
        tags_of,
    )

    def label(name: str) -> str:
        producer = tags_of(available[name].run_id).get(Runs.STAGE) if name in available else None
        return f"{producer}/{name}" if producer else name

    digests.update({name: c.key for name, c in contexts_of(stage, cfg, ctx).items()})
    return cache.decide(
        stage, cfg, ctx.client, ctx.experiment_id, digests, pending=pending, label=label
    )


def _check_returned(stage: Stage, values: Any) -> None:
    """A stage function returns ``{output name: value}`` with every declared output. Raises
    StageError saying what it returned instead."""
    declared = [d.name for d in stage.outputs]
    name = getattr(stage.func, "__qualname__", str(stage.func))
    if not isinstance(values, Mapping):
        raise StageError(
            f"{name} returned a {type(values).__name__}; a stage function returns a dict of its "
            f"outputs: {{{', '.join(repr(n) + ': ...' for n in declared)}}}",
            stage=stage.name,
        )
    missing = [n for n in declared if n not in values]
    if missing:
        got = ", ".join(repr(str(k)) for k in values) or "nothing"
        raise StageError(
            f"{name} returned no {', '.join(map(repr, missing))} (declared under outputs); it "
            f"returned {got}",
            stage=stage.name,
        )


def contexts_of(stage: Stage, cfg: DictConfig, ctx: RunContext) -> dict[str, Context]:
    """What ``stage`` reads from outside the pipeline, resolved once per stage and run."""
    if stage.name not in ctx.contexts:
        found = stage.context(cfg, ctx.services) if stage.context is not None else {}
        ctx.contexts[stage.name] = found
    return ctx.contexts[stage.name]


def record_hit(
    stage: Stage,
    ctx: RunContext,
    decision: cache.CacheDecision,
    available: dict[str, Handoff],
    *,
    run_id: str | None = None,
) -> dict[str, Handoff]:
    """Record a cache hit as this pipeline's run of ``stage`` and return the reused outputs.

    The hit run carries the source's params, metrics and digests (so the UI compares it like
    any run), points at the source (``pipeline.cache.source_run``) and at the runs its inputs
    come from now. Its outputs are read from the source run.
    """
    started = time.perf_counter()
    client = ctx.client
    source = client.get_run(decision.source_run_id)
    tags = {
        **stage_tags(stage, ctx),
        Cache.STATUS: "hit",
        Cache.KEY: decision.key,
        Cache.SOURCE: source.info.run_id,
        Cache.REASON: f"same cache key as run {source.info.run_id}",
    }
    tags.update({k: v for k, v in source.data.tags.items() if k.startswith(Runs.DIGEST_PREFIX)})
    if Runs.MODEL_URI in source.data.tags:
        tags[Runs.MODEL_URI] = source.data.tags[Runs.MODEL_URI]
    for dataset in stage.reads:
        if dataset.name in available:
            tags[f"{Runs.UPSTREAM_PREFIX}{dataset.name}"] = available[dataset.name].run_id
    if run_id is None:
        run_id = client.create_run(ctx.experiment_id, run_name=stage.name, tags=tags).info.run_id
        finish = True
    else:
        finish = False  # `mlflow run` ends the run it made when this process exits
    ctx.stage_runs[stage.name] = run_id
    now = int(time.time() * 1000)
    own = {"wall_time_s", "peak_rss_mb"}
    metrics = [Metric(k, v, now, 0) for k, v in source.data.metrics.items() if k not in own]
    metrics.append(Metric("wall_time_s", time.perf_counter() - started, now, 0))
    rss_mb = psutil.Process().memory_info().rss / 2**20
    metrics.append(Metric("peak_rss_mb", rss_mb, now, 0))
    params = [Param(k, v) for k, v in source.data.params.items()]
    for start in range(0, max(len(params), len(metrics), 1), 100):
        client.log_batch(
            run_id,
            metrics=metrics[start : start + 100],
            params=params[start : start + 100],
            tags=[RunTag(k, v) for k, v in tags.items()] if start == 0 else [],
        )
    _link_reused_datasets(client, stage, ctx, source, run_id)
    if finish:
        client.set_terminated(run_id, "FINISHED")
    return {
        d.name: Handoff(
            run_id=source.info.run_id,
            digest=source.data.tags.get(Runs.DIGEST_OUTPUT + d.name),
        )
        for d in stage.outputs
    }


def _run_in_active_run(
    stage: Stage,
    cfg: DictConfig,
    ctx: RunContext,
    available: dict[str, Handoff],
    run_id: str,
    decision: cache.CacheDecision,
) -> dict[str, Handoff]:
    client = ctx.client
    started = time.perf_counter()
    own_config = redacted(config_slice(cfg, stage.config_keys))  # secrets never leave memory
    mlflow.log_params(flatten(own_config))
    artifacts.save_text(client, run_id, "config.yaml", resolved_yaml(own_config))
    if decision.manifest is not None:
        artifacts.save_text(client, run_id, cache.MANIFEST, decision.manifest.to_json())

    with PeakMemory(stage=stage.name) as memory:
        inputs, contract = _load_inputs(stage, cfg, ctx, available)
        call = StageCall(stage, cfg, ctx, available, run_id)
        kwargs = {name: _service(name, call) for name in stage.services}
        for context in contexts_of(stage, cfg, ctx).values():
            if context.argument:
                kwargs[context.argument] = context.value()
        work = stage.work(cfg, **inputs) if stage.work else threads.frame_cells(inputs)
        choice = threads.choose(cfg.runner.get("threads", "auto"), work, ctx.cpu_monitor)
        if choice is not None:
            mlflow.log_param("threads", choice.threads)
            log.info("[%s] %d thread(s) (%s)", stage.name, choice.threads, choice.why)
        with threads.limited(choice):
            values = stage.func(cfg, **inputs, **kwargs)
        checkpoint()  # nothing of an interrupted stage is stored
        _check_returned(stage, values)
        model_digest = _sha(f"model:{decision.key if decision.storable else run_id}")
        outputs = _save_outputs(
            stage,
            cfg,
            client,
            run_id,
            values,
            _contract(stage.outputs, values) or contract,
            model_digest,
            pipeline_run_id=ctx.pipeline_run_id,
        )
        if stage.gate is not None:
            stage.gate(cfg, values)

    mlflow.log_metrics(
        {"wall_time_s": time.perf_counter() - started, "peak_rss_mb": memory.peak_mb}
    )
    checkpoint()
    if decision.storable:
        after = _manifest_after(stage, cfg, ctx, decision)
        if after is not None:
            artifacts.save_text(client, run_id, cache.MANIFEST_AFTER, after.to_json())
            mlflow.set_tag(Cache.KEY_AFTER, after.key)
        # Last: only a run whose outputs are all logged and checked can ever be reused.
        mlflow.set_tag(Cache.STORED, "true")
    return outputs


def _manifest_after(
    stage: Stage, cfg: DictConfig, ctx: RunContext, decision: cache.CacheDecision
) -> cache.Manifest | None:
    """The cache manifest with ``stage``'s contexts as its run left them, when that run
    changed them (register promoted, so the champion it compared with is another); else
    None."""
    if stage.context is None or decision.manifest is None:
        return None
    before = contexts_of(stage, cfg, ctx)
    now = {name: c.key for name, c in stage.context(cfg, ctx.services).items()}
    if now == {name: c.key for name, c in before.items()}:
        return None
    inputs = {k: v for k, v in decision.manifest.inputs.items() if k not in before} | now
    return replace(decision.manifest, inputs=inputs)


def _service(name: str, call: StageCall) -> Any:
    """The keyword argument ``name`` from the run's services."""
    if name not in call.ctx.services:
        raise StageError(f"asks for service '{name}', which this run does not provide")
    value = call.ctx.services[name]
    return value.make(call) if isinstance(value, RunService) else value


def _contract(datasets: tuple[Dataset, ...], values: dict[str, Any]) -> pa.DataFrameSchema | None:
    """The data contract among ``values`` (pandera YAML text of a ``contract`` dataset)."""
    for dataset in datasets:
        text = values.get(dataset.name) if dataset.contract else None
        if text:
            return schemas.contract_from_yaml(text)
    return None


def _load_inputs(
    stage: Stage, cfg: DictConfig, ctx: RunContext, available: dict[str, Handoff]
) -> tuple[dict[str, Any], pa.DataFrameSchema | None]:
    """The function's inputs, validated, and the data contract they were validated against."""
    values: dict[str, Any] = {}
    for dataset in stage.reads:
        handoff = available.get(dataset.name)
        if handoff is None:
            raise StageError(f"input '{dataset.name}' has no producing run", stage=stage.name)
        value = handoff.value
        if value is None:
            try:
                value = _load(dataset, handoff.run_id, allow_unsafe=allow_unsafe_models(cfg))
            except StageError as exc:
                if "is not an artifact of run" not in str(exc):
                    raise
                producer = ctx.pipeline.producers()[dataset.name].name
                raise StageError(
                    f"{exc}; its files are gone from the store (deleted by hand or by a clean-up): "
                    f"run again with +cache.stages.{producer}=recompute to compute it anew",
                    stage=stage.name,
                ) from exc
        mlflow.set_tag(f"{Runs.UPSTREAM_PREFIX}{dataset.name}", handoff.run_id)
        if dataset.kind == "text":
            mlflow.set_tag(f"{Runs.DIGEST_INPUT}{dataset.name}", artifacts.text_digest(value))
        elif dataset.kind == "model":
            mlflow.set_tag(f"{Runs.INPUT_PREFIX}{dataset.name}.uri", value.uri)
            if handoff.digest is None:
                handoff.digest = ctx.client.get_run(handoff.run_id).data.tags.get(
                    Runs.DIGEST_OUTPUT + dataset.name
                )
            if handoff.digest:
                mlflow.set_tag(Runs.DIGEST_INPUT + dataset.name, handoff.digest)
        values[dataset.name] = value
    contract = _contract(stage.reads, values)
    for dataset in stage.inputs:
        if dataset.kind == "frame":
            values[dataset.name] = _checked_input(
                stage, dataset, cfg, contract, values[dataset.name], available[dataset.name]
            )
    return {stage.argument(d.name): values[d.name] for d in stage.inputs}, contract


def _checked_input(
    stage: Stage,
    dataset: Dataset,
    cfg: DictConfig,
    contract: pa.DataFrameSchema | None,
    frame: pd.DataFrame,
    handoff: Handoff,
) -> pd.DataFrame:
    """Validate an input frame and log its digest and row count.

    A frame handed over in memory that passed this very schema on its way out of the producing
    stage is not validated again: the wrapper holds the only reference to that validated frame
    (the gate validates a shallow copy, a frame of its own under copy-on-write), and every
    consumer gets a shallow copy-on-write view of it, so no stage can change it in place. Its
    content, and so its digest, is what was logged then.
    """
    digest = None
    if dataset.schema is not None:
        key = _schema_key(dataset, cfg, contract)
        if handoff.value is not None and handoff.schema_key == key and handoff.digest:
            digest = handoff.digest
            frame = frame.copy(deep=False)
        else:
            frame = _validate(stage, dataset, cfg, contract, frame)
    digest = _log_frame_facts("input", dataset.name, frame, digest)
    _log_dataset(MlflowClient(), mlflow.active_run().info.run_id, dataset.name, frame, digest)
    return frame


def _validate(
    stage: Stage,
    dataset: Dataset,
    cfg: DictConfig,
    contract: pa.DataFrameSchema | None,
    frame: pd.DataFrame,
) -> pd.DataFrame:
    result = check(
        frame,
        dataset.schema(cfg, contract),
        stage=stage.name,
        dataset=dataset.name,
        max_lines=cfg.validation.max_message_failures,
    )
    if not result.warnings.empty:
        # Reported once, at the validate stage; every later boundary only records them.
        run_id = mlflow.active_run().info.run_id
        artifacts.save_table(
            mlflow.tracking.MlflowClient(), run_id, f"warnings/{dataset.name}.csv", result.warnings
        )
        mlflow.set_tag(f"{Runs.WARNINGS_PREFIX}{dataset.name}", str(len(result.warnings)))
    return result.frame


def _schema_key(dataset: Dataset, cfg: DictConfig, contract: pa.DataFrameSchema | None) -> tuple:
    """What the schema of ``dataset`` is built from: its schema function, the data contract
    and the config."""
    return (
        dataset.schema,
        contract.to_yaml() if contract is not None else None,
        # The resolved config flattened to sorted text: equal configs, equal text, at a fifth
        # of the cost of the YAML a run logs (~10 ms; a run makes a dozen of these keys).
        json.dumps(flatten(cfg), sort_keys=True),
    )


def allow_unsafe_models(cfg: DictConfig) -> bool:
    """``registry.allow_unsafe_models``: load models that could run code (see
    store.artifacts.load_trusted_model)."""
    return bool(cfg.get("registry", {}).get("allow_unsafe_models", False))


def _load(dataset: Dataset, run_id: str, *, allow_unsafe: bool = False) -> Any:
    if dataset.kind == "frame":
        return artifacts.load_frame(run_id, dataset.name)
    if dataset.kind == "text":
        return artifacts.load_text(run_id, dataset.filename or dataset.name)
    if dataset.kind == "model":
        uri = mlflow.get_run(run_id).data.tags.get(Runs.MODEL_URI)
        if not uri:
            raise StageError(f"run {run_id} logged no model (tag {Runs.MODEL_URI} missing)")
        return schemas.TrainedModel(
            estimator=artifacts.load_trusted_model(uri, allow_unsafe=allow_unsafe),
            input_example=None,
            uri=uri,
        )
    raise StageError(f"unknown dataset kind {dataset.kind!r} for '{dataset.name}'")


def _save_outputs(
    stage: Stage,
    cfg: DictConfig,
    client: MlflowClient,
    run_id: str,
    values: dict[str, Any],
    contract: pa.DataFrameSchema | None,
    model_digest: str,
    *,
    pipeline_run_id: str | None = None,
) -> dict[str, Handoff]:
    outputs: dict[str, Handoff] = {}
    for index, dataset in enumerate(stage.outputs):
        if index:
            _failpoint(stage.name)
        value = values[dataset.name]
        handoff = Handoff(run_id=run_id)
        if value is None and dataset.optional:
            continue
        if dataset.kind == "frame":
            if dataset.schema is not None:
                value = _validate(stage, dataset, cfg, contract, value)
                handoff.schema_key = _schema_key(dataset, cfg, contract)
            digest = artifacts.save_frame_digested(client, run_id, dataset.name, value)
            handoff.digest = _log_frame_facts("output", dataset.name, value, digest)
            if _starts_pipeline(stage) and pipeline_run_id:
                # A dataset the pipeline starts from: the pipeline run's Dataset column shows it.
                _log_dataset(client, pipeline_run_id, dataset.name, value, handoff.digest)
            if dataset.log_as_metrics:
                mlflow.log_metrics(dict(zip(value["metric"], value["value"], strict=True)))
        elif dataset.kind == "text":
            artifacts.save_text(client, run_id, dataset.filename or dataset.name, value)
            handoff.digest = artifacts.text_digest(value)
            mlflow.set_tag(Runs.DIGEST_OUTPUT + dataset.name, handoff.digest)
        elif dataset.kind == "model":
            with _no_integer_hint():
                value.uri = artifacts.log_model(value.estimator, value.input_example)
            mlflow.set_tag(Runs.MODEL_URI, value.uri)
            handoff.digest = model_digest
            mlflow.set_tag(Runs.DIGEST_OUTPUT + dataset.name, model_digest)
        handoff.value = value
        outputs[dataset.name] = handoff
    _failpoint(stage.name)
    return outputs


def _failpoint(stage_name: str) -> None:
    """Testing aid: ``MLFLOW_PIPELINE_FAILPOINT=<stage>`` kills this process with SIGKILL in
    the middle of that stage (outputs partly logged, run still RUNNING), as a crash or the
    OOM killer would; ``<stage>:<n>`` after its n-th output (default: after the first)."""
    point = os.environ.get(Env.FAILPOINT)
    if not point:
        return
    name, _, after = point.partition(":")
    count = _failpoint_counts.get(stage_name, 0) + 1
    _failpoint_counts[stage_name] = count
    if name == stage_name and count == int(after or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _log_frame_facts(
    direction: str, name: str, frame: pd.DataFrame, digest: str | None = None
) -> str:
    """Tag the frame's digest (computed unless given) and log its row count; returns the
    digest."""
    digest = digest or artifacts.digest(frame)
    mlflow.set_tag(f"{Runs.DIGEST_PREFIX}{direction}.{name}", digest)
    mlflow.log_metric(f"rows.{direction}.{name}", len(frame))
    return digest


def _log_dataset(
    client: MlflowClient, run_id: str, name: str, frame: pd.DataFrame, digest: str
) -> None:
    """``frame`` as an input of run ``run_id`` with MLflow's dataset tracking (name, digest,
    schema, row count; context: the dataset's name), so the UI lists and compares it."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.types.utils import _infer_schema

    with _no_integer_hint():
        dataset = mlflow.data.from_pandas(frame, name=name, digest=digest[:20])
        # The schema from the first rows: inferring it from every row of a large frame is slow.
        dataset.__dict__["schema"] = _infer_schema(frame.head(1000))
    tags = [InputTag(key=MLflow.DATASET_CONTEXT, value=name)]
    inputs = [DatasetInput(dataset._to_mlflow_entity(), tags)]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except Exception:  # MlflowException, or SQLAlchemy's IntegrityError unwrapped
        # Parallel sweep jobs log the same dataset at once: MLflow inserts it if missing and
        # the slower job hits the unique constraint. The dataset exists now; link it again.
        client.log_inputs(run_id, datasets=inputs)


def _link_reused_datasets(
    client: MlflowClient, stage: Stage, ctx: RunContext, source: Any, run_id: str
) -> None:
    """A hit's datasets, as a computed run would have logged them: the source run's inputs on
    the hit run and, for a stage the pipeline starts from (ingest), the datasets it gave the
    source's pipeline run on this pipeline run, so the UI's Dataset column is never "-" for a
    run whose data came from the cache. The datasets exist already: they are linked, not
    read or inferred again."""
    if source.inputs.dataset_inputs:
        client.log_inputs(run_id, datasets=source.inputs.dataset_inputs)
    parent = source.data.tags.get(MLflow.PARENT)
    if not (_starts_pipeline(stage) and parent and ctx.pipeline_run_id):
        return
    names = {d.name for d in stage.outputs if d.kind == "frame"}
    try:
        given = client.get_run(parent).inputs.dataset_inputs
    except MlflowException:  # the source's pipeline run was deleted for good
        return
    started = [
        i
        for i in given
        if any(t.key == MLflow.DATASET_CONTEXT and t.value in names for t in i.tags)
    ]
    if started:
        client.log_inputs(ctx.pipeline_run_id, datasets=started)


def _starts_pipeline(stage: Stage) -> bool:
    """A stage with no frame input (ingest): its frames are what the pipeline starts from."""
    return not any(d.kind == "frame" for d in stage.inputs)


@contextmanager
def _no_integer_hint() -> Iterator[None]:
    """Without MLflow's hint that integer columns cannot hold missing values: the contract
    keeps such columns as nullable integers, and scoring applies it before the model."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*Inferred schema contains integer column", category=UserWarning
        )
        yield


def _record_failure(client: MlflowClient, stage: Stage, run_id: str, exc: BaseException) -> None:
    """Best effort: the error tag, the failure table, the traceback of a bug."""
    if isinstance(exc, PipelineError) and exc.stage is None:
        exc.stage = stage.name
    try:
        client.set_tag(run_id, Runs.ERROR, redact_url(str(exc))[:5000] or type(exc).__name__)
        if isinstance(exc, DataValidationError):
            artifacts.save_table(client, run_id, f"failures/{exc.dataset}.csv", exc.failure_cases)
            if exc.report is not None:
                html = validation_report(exc.report)
                artifacts.save_text(client, run_id, "reports/validation.html", html)
        if not isinstance(exc, PipelineError):
            artifacts.save_text(client, run_id, "error.txt", traceback.format_exc())
    except Exception:  # the store itself may be what failed; the original error matters more
        pass


class PeakMemory:
    """Samples this process's RSS in a background thread; ``peak_mb`` after the block. With a
    ``stage`` name it also logs a heartbeat every ``heartbeat_s`` while the block runs, so a
    long stage is not silence."""

    def __init__(
        self, interval_s: float = 0.1, *, stage: str | None = None, heartbeat_s: float = 30.0
    ) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.stage = stage
        self.heartbeat_s = heartbeat_s
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        started = next_beat = time.monotonic()
        next_beat += self.heartbeat_s
        while not self._stop.is_set():
            rss_mb = self._process.memory_info().rss / 2**20
            self.peak_mb = max(self.peak_mb, rss_mb)
            if self.stage and time.monotonic() >= next_beat:
                elapsed = time.monotonic() - started
                log.info("stage %s: still running (%.0f s, %.0f MB)", self.stage, elapsed, rss_mb)
                next_beat += self.heartbeat_s
            # Sleeps, not spins: the thread must not take a core from the stage's OpenMP work.
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 2**20)
