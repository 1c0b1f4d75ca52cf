"""Executes a pipeline: every stage in this process, or one ``mlflow.projects.run`` per stage.

Either way the result is the same run tree: one pipeline run with one child run per stage, the
same artifacts, the same registry outcome.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from hydra.experimental.callback import Callback
from mlflow.exceptions import MlflowException
from mlflow.projects import ExecutionException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import (
    METRICS,
    PROJECT_ROOT,
    Task,
    flatten,
    hydra_quote,
    load_config,
    promotion_metric,
    resolved_yaml,
    split_overrides,
)
from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.alerts import alert_drift, note_failed_run
from mlflow_pipeline.engine.pipeline import order, producers, stage_named
from mlflow_pipeline.engine.stage import Handoff, RunContext, Stage, decide, record_hit, run_stage
from mlflow_pipeline.errors import DriftError, PipelineError, StageError
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.store.artifacts import save_text
from mlflow_pipeline.store.tracking import (
    activate,
    code_version,
    end_active_run,
    ensure_experiment,
    owner_tags,
    reap_dead_runs,
    record_error,
    resolve_tracking,
    retry_transient,
)
from mlflow_pipeline.tags import Cache, Env, MLflow, Runs, Sweep

log = logging.getLogger("mlflow_pipeline")

# Set by SweepRun for the jobs of a Hydra multirun: the run every job's pipeline run nests under.
# On the pipeline run: "ingest=hit validate=hit split=miss ..." (the cache outcome per stage).
# On the pipeline run: detected | none | not checked (the profile stage's drift result).
# A pipeline run's part in a sweep: "shared" (stages every job shares, run once first),
# "job", or "register" (the best job's model, registered after all jobs).
SWEEP_SUMMARY = "sweep_summary.csv"
# Set by `mlflow run . -P hydra_options="-m ..."`: the run `mlflow run` made becomes the sweep run.
PROJECTS_DIR = PROJECT_ROOT / "projects"


@dataclass
class PipelineResult:
    pipeline_run_id: str
    experiment_id: str
    # Stage name -> its run in this pipeline run (computed, or a cache hit).
    stage_run_ids: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, cache.Decision] = field(default_factory=dict)
    promotion: dict[str, Any] | None = None
    # The profile stage's drift result (drift.json), when profile ran or was reused.
    drift: dict[str, Any] | None = None


def run_pipeline(
    cfg: DictConfig,
    overrides: list[str] | None = None,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    role: str | None = None,
) -> PipelineResult:
    """Run ``cfg.steps`` of the pipeline as one pipeline run with a child run per stage.

    ``run_id`` resumes a run created for us (``mlflow run .``); ``parent_run_id`` nests the
    pipeline run (a sweep job under its sweep run). Inside a sweep (``role``: ``job`` by
    default there, ``shared`` or ``register``) a job leaves ``register`` to the sweep, which
    registers only its best job. Raises PipelineError after marking the pipeline run FAILED.
    """
    tracking = resolve_tracking(cfg)
    activate(tracking)
    client = retry_transient(MlflowClient)
    sweep_run_id = os.environ.get(Env.SWEEP_RUN_ID) or None
    parent_run_id = parent_run_id or sweep_run_id
    role = role or ("job" if sweep_run_id else None)
    stages = order(list(cfg.steps))
    if role == "job":
        stages = [s for s in stages if s.name != "register"]
    tags = {
        Runs.KIND: "pipeline",
        Runs.STEPS: ",".join(s.name for s in stages),
        Runs.RUNNER_MODE: cfg.runner.mode,
        Runs.OVERRIDES: " ".join(overrides or []),
        **code_version(),
        **owner_tags(),
    }
    if role:
        tags[Sweep.ROLE] = role
    if run_id:
        experiment_id = retry_transient(lambda: client.get_run(run_id).info.experiment_id)
        retry_transient(lambda: reap_dead_runs(client, experiment_id))
        # start_run(run_id=...) leaves $MLFLOW_RUN_ID set (`mlflow run` sets it), and the first
        # stage's start_run would then resume this run instead of starting a child run.
        os.environ.pop(Env.RUN_ID, None)
        run = mlflow.start_run(run_id=run_id, tags=tags)
    else:
        if parent_run_id:  # a sweep job: next to its sweep run, whatever data it uses
            experiment_id = client.get_run(parent_run_id).info.experiment_id
        else:
            experiment_id = retry_transient(
                lambda: ensure_experiment(client, cfg.tracking.experiment_name, tracking)
            )
        retry_transient(lambda: reap_dead_runs(client, experiment_id))
        run = mlflow.start_run(
            experiment_id=experiment_id,
            run_name="pipeline",
            parent_run_id=parent_run_id,
            tags=tags,
        )
    pipeline_run_id = run.info.run_id
    result = PipelineResult(pipeline_run_id=pipeline_run_id, experiment_id=experiment_id)
    log.info("pipeline run %s (experiment %s) at %s", pipeline_run_id, experiment_id, tracking.uri)
    try:
        mlflow.log_params({k: v for k, v in flatten(cfg).items() if k != "steps"})
        save_text(client, pipeline_run_id, "config.yaml", resolved_yaml(cfg))
        ctx = RunContext(
            client=client,
            experiment_id=experiment_id,
            pipeline_run_id=pipeline_run_id,
            runner_mode=cfg.runner.mode,
            upstream_run_id=cfg.runner.upstream_run_id,
            services={
                "registry": ModelRegistry.from_config(client, cfg),
                "pipeline_run_id": pipeline_run_id,
            },
        )
        try:
            if cfg.runner.mode == "projects":
                _run_as_projects(stages, cfg, overrides or [], ctx, result)
            else:
                _run_in_process(stages, cfg, ctx, result)
        finally:
            result.stage_run_ids.update(ctx.stage_runs)
            result.decisions.update(ctx.decisions)
            mlflow.set_tag(Cache.SUMMARY, cache_summary(ctx.decisions))
            # Drift the pipeline went on with (policy warn) alerts here, once: from the run
            # that computed it, not from the runs that reuse it (sweep jobs, reruns).
            profile = result.decisions.get("profile")
            alert_drift(
                cfg,
                result.drift,
                pipeline_run_id=pipeline_run_id,
                experiment_id=experiment_id,
                computed=profile is not None and not profile.hit,
            )
    except BaseException as exc:
        note_failed_run(exc, pipeline_run_id, experiment_id)
        record_error(pipeline_run_id, exc)
        end_active_run(exc)
        raise
    end_active_run()
    return result


def _run_in_process(
    stages: list[Stage], cfg: DictConfig, ctx: RunContext, result: PipelineResult
) -> None:
    available: dict[str, Handoff] = {}
    for stage in stages:
        available.update(resolve_inputs(stage, ctx, available))
        try:
            outputs = run_stage(stage, cfg, ctx, available)
        except DriftError as exc:
            _flag_drift(result, exc.drift)
            raise
        available.update(outputs)
        _collect(result, outputs)


def _collect(result: PipelineResult, outputs: dict[str, Handoff]) -> None:
    """Keep the promotion report and the drift result for the summary; flag drift."""
    if "promotion" in outputs:
        result.promotion = json.loads(_text(outputs["promotion"], "promotion.json"))
    if "drift" in outputs:
        _flag_drift(result, json.loads(_text(outputs["drift"], "drift.json")))


def _text(handoff: Handoff, filename: str) -> str:
    if handoff.value is not None:
        return handoff.value
    # reused from an earlier run
    return mlflow.artifacts.load_text(f"runs:/{handoff.run_id}/{filename}")


def _flag_drift(result: PipelineResult, drift: dict[str, Any]) -> None:
    """Flag the pipeline run: tag pipeline.drift (detected | none | not checked)."""
    result.drift = drift
    status = (
        "not checked"
        if not drift.get("checked")
        else ("detected" if drift.get("detected") else "none")
    )
    mlflow.set_tag(Runs.DRIFT, status)
    if drift.get("detected"):
        mlflow.set_tag(Runs.DRIFTED, ",".join(drift.get("drifted", []))[:5000])


def _run_as_projects(
    stages: list[Stage],
    cfg: DictConfig,
    overrides: list[str],
    ctx: RunContext,
    result: PipelineResult,
) -> None:
    # `python` in each project's command must be this interpreter (env_manager=local).
    bin_dir = os.path.dirname(sys.executable)
    if not os.environ.get("PATH", "").startswith(bin_dir + os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    hydra_options = " ".join(_pinned_overrides(cfg, overrides))
    for stage in stages:
        # Decide here: a hit costs a look-up, not a project run (~8 s of process start).
        available = resolve_inputs(stage, ctx, {})
        decision = retry_transient(decide, stage, cfg, ctx, available, what="cache")
        if decision.hit:
            log.info(decision.describe())
            ctx.decisions[stage.name] = decision
            _collect(result, record_hit(stage, ctx, decision, available))
            continue
        log.info("stage %s: running as project %s", stage.name, PROJECTS_DIR / stage.name)
        try:
            submitted = mlflow.projects.run(
                uri=str(PROJECTS_DIR / stage.name),
                entry_point="main",
                parameters={
                    "hydra_options": hydra_options,
                    "pipeline_run_id": ctx.pipeline_run_id,
                    "upstream_run_id": ctx.upstream_run_id or "",
                },
                experiment_id=ctx.experiment_id,
                env_manager=cfg.runner.env_manager,
                run_name=stage.name,
                synchronous=True,
            )
        except (ExecutionException, MlflowException) as exc:
            raise StageError(_failed_stage_message(ctx, stage.name, exc), stage=stage.name) from exc
        run_id = submitted.run_id
        ctx.stage_runs[stage.name] = run_id
        ctx.decisions[stage.name] = decision
        _collect(
            result,
            {
                d.name: Handoff(run_id=run_id)
                for d in stage.outputs
                if d.name in ("promotion", "drift")
            },
        )


def _pinned_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """The overrides that reproduce ``cfg`` in a stage project, which runs in another directory
    (``projects/<stage>``): relative data paths and the tracking store pinned as absolute."""
    tracking = resolve_tracking(cfg)
    pinned = [*overrides, f"tracking.uri={hydra_quote(tracking.uri)}"]
    pinned.append(
        f"tracking.root={hydra_quote(str(Path(cfg.tracking.root or PROJECT_ROOT).resolve()))}"
    )
    for key in ("path", "schema"):
        value = cfg.data.get(key)
        if value:
            pinned.append(f"data.{key}={hydra_quote(str(Path(value).resolve()))}")
    return pinned


def _failed_stage_message(ctx: RunContext, stage_name: str, exc: Exception) -> str:
    """The failed stage run's own error (its ``pipeline.error`` tag), else MLflow's."""
    runs = ctx.client.search_runs(
        [ctx.experiment_id],
        f"tags.`{Runs.PIPELINE_RUN}` = '{ctx.pipeline_run_id}' "
        f"and tags.`{Runs.STAGE}` = '{stage_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs and runs[0].data.tags.get(Runs.ERROR):
        return runs[0].data.tags[Runs.ERROR]
    return f"project run failed: {exc}"


def resolve_inputs(
    stage: Stage, ctx: RunContext, available: dict[str, Handoff]
) -> dict[str, Handoff]:
    """Find the run that produced each input of ``stage`` not already ``available``.

    An input produced in this pipeline run comes from it. All other inputs come from ONE
    earlier pipeline run: ``ctx.upstream_run_id``, else the newest pipeline run in the
    experiment in which every stage producing them FINISHED (a failed or half-run pipeline is
    never a source). Then checks that the inputs belong together (see check_lineage).
    Raises StageError when there is no such run or the inputs do not belong together.
    """
    made_by = producers()
    found: dict[str, Handoff] = {}
    elsewhere: list[str] = []
    for dataset in (*stage.inputs, *stage.schema_inputs):
        if dataset.name in available:
            continue
        producer = made_by[dataset.name].name
        run_id = ctx.pipeline_run_id and find_stage_run(
            ctx.client, ctx.experiment_id, producer, ctx.pipeline_run_id
        )
        if run_id:
            found[dataset.name] = Handoff(run_id=run_id)
        else:
            elsewhere.append(dataset.name)
    if elsewhere:
        runs = _upstream_stage_runs(stage, ctx, sorted({made_by[n].name for n in elsewhere}))
        for name in elsewhere:
            found[name] = Handoff(run_id=runs[made_by[name].name])
    for name, handoff in found.items():
        log.info("stage %s: input '%s' from run %s", stage.name, name, handoff.run_id)
    names = [d.name for d in (*stage.inputs, *stage.schema_inputs)]
    check_lineage(stage, {n: (found.get(n) or available[n]).run_id for n in names}, ctx.client)
    return found


def _upstream_stage_runs(stage: Stage, ctx: RunContext, needed: list[str]) -> dict[str, str]:
    """Stage name -> FINISHED run of it, all within one earlier pipeline run."""
    client = ctx.client
    if ctx.upstream_run_id:
        try:
            experiment_id = client.get_run(ctx.upstream_run_id).info.experiment_id
        except MlflowException as exc:
            raise StageError(
                f"runner.upstream_run_id: no run {ctx.upstream_run_id}", stage=stage.name
            ) from exc
        runs = {p: find_stage_run(client, experiment_id, p, ctx.upstream_run_id) for p in needed}
        missing = [p for p, run_id in runs.items() if not run_id]
        if missing:
            raise StageError(
                f"pipeline run {ctx.upstream_run_id} has no FINISHED run of stage(s) "
                f"{', '.join(missing)}; include them in steps or pick another upstream run",
                stage=stage.name,
            )
        return runs
    first, *others = needed
    candidates = client.search_runs(
        [ctx.experiment_id],
        f"tags.`{Runs.STAGE}` = '{first}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=100,
    )
    for candidate in candidates:
        pipeline_run_id = candidate.data.tags.get(Runs.PIPELINE_RUN)
        if not pipeline_run_id or pipeline_run_id == ctx.pipeline_run_id:
            continue
        # A cache hit holds no outputs; the run it reused does (as in find_stage_run).
        runs = {first: candidate.data.tags.get(Cache.SOURCE) or candidate.info.run_id}
        runs.update(
            {p: find_stage_run(client, ctx.experiment_id, p, pipeline_run_id) for p in others}
        )
        if all(runs.values()):
            return runs
    raise StageError(
        f"no earlier pipeline run in experiment {ctx.experiment_id} has FINISHED runs of "
        f"stage(s) {', '.join(needed)}; include them in steps or set runner.upstream_run_id",
        stage=stage.name,
    )


def check_lineage(stage: Stage, run_ids: dict[str, str], client: MlflowClient) -> None:
    """The inputs of a stage must belong together: when one input was itself computed from
    another of them (tag ``pipeline.upstream.<name>`` on its run), it must be from the very
    run that provides that other input now, or have exactly the same content (equal digests,
    as when that other input was recomputed identically). Raises StageError naming both runs.
    """
    tags = {run_id: client.get_run(run_id).data.tags for run_id in set(run_ids.values())}
    for name, run_id in run_ids.items():
        for other, other_run_id in run_ids.items():
            recorded = tags[run_id].get(f"{Runs.UPSTREAM_PREFIX}{other}")
            if other == name or not recorded or recorded == other_run_id:
                continue
            used = tags[run_id].get(Runs.DIGEST_INPUT + other)
            if used and used == tags[other_run_id].get(Runs.DIGEST_OUTPUT + other):
                continue
            raise StageError(
                f"inputs do not belong together: '{name}' (run {run_id}) was computed from "
                f"'{other}' of run {recorded}, but '{other}' now comes from run "
                f"{other_run_id}; rerun the stages that produce them together",
                stage=stage.name,
            )


def find_stage_run(
    client: MlflowClient,
    experiment_id: str,
    stage_name: str,
    pipeline_run_id: str | None = None,
) -> str | None:
    """The newest FINISHED run of ``stage_name`` (within ``pipeline_run_id`` if given); for a
    cache hit, the run it reused (which holds the outputs)."""
    query = f"tags.`{Runs.STAGE}` = '{stage_name}' and attributes.status = 'FINISHED'"
    if pipeline_run_id:
        query += f" and tags.`{Runs.PIPELINE_RUN}` = '{pipeline_run_id}'"
    runs = client.search_runs(
        [experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        return None
    return runs[0].data.tags.get(Cache.SOURCE) or runs[0].info.run_id


def run_stage_project(
    stage_name: str,
    cfg: DictConfig,
    *,
    run_id: str | None,
    pipeline_run_id: str | None,
    upstream_run_id: str | None,
) -> dict[str, Handoff]:
    """Run one stage on its own (the body of ``projects/<stage>``).

    Nests under ``pipeline_run_id`` when given and reads inputs from it, else from
    ``upstream_run_id``, else from the newest FINISHED runs of the producing stages.
    """
    tracking = resolve_tracking(cfg)
    activate(tracking)
    client = retry_transient(MlflowClient)
    if run_id:
        experiment_id = client.get_run(run_id).info.experiment_id
    elif pipeline_run_id:
        experiment_id = client.get_run(pipeline_run_id).info.experiment_id
    else:
        experiment_id = ensure_experiment(client, cfg.tracking.experiment_name, tracking)
    if not pipeline_run_id:  # inside a pipeline, the pipeline run did this already
        retry_transient(lambda: reap_dead_runs(client, experiment_id))
    stage = stage_named(stage_name)
    ctx = RunContext(
        client=client,
        experiment_id=experiment_id,
        pipeline_run_id=pipeline_run_id,
        runner_mode="projects",
        upstream_run_id=upstream_run_id or cfg.runner.upstream_run_id,
        services={"registry": ModelRegistry.from_config(client, cfg)},
    )
    available = resolve_inputs(stage, ctx, {})
    if not pipeline_run_id:
        # A stage run on its own: the stage run is its own pipeline run for registry tags.
        ctx.services["pipeline_run_id"] = run_id or ""
    else:
        ctx.services["pipeline_run_id"] = pipeline_run_id
    return run_stage(stage, cfg, ctx, available, run_id=run_id)


class SweepRun(Callback):
    """Hydra callback: one parent run for a multirun sweep, with every job's pipeline nested
    under it, whatever the launcher (in-process, joblib processes, a Ray cluster).

    Before the jobs: the store and experiment are created once (a brand-new database must not
    be created by parallel jobs at once), and the stages no swept key touches (ingest, validate,
    split when only the model is swept) run once, so that every job's cache hits them. After
    the jobs: a summary table (job config -> metrics) on the sweep run, the best job on the
    promotion metric, and one ``register`` pipeline run for that job only.

    ``failures`` counts the sweep's failed jobs (the CLI's exit code).
    """

    failures = 0

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.failed = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepRun.failures = 0
        launcher = config.hydra.launcher
        if str(launcher.get("_target_", "")).endswith("RayLauncher"):
            host = str(OmegaConf.select(launcher, "ray.init.address") or "").split(":")[0]
            if host in ("127.0.0.1", "localhost"):  # else Ray swaps in the network IP and hangs
                os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        cfg = task_config(config)
        tracking = resolve_tracking(cfg)
        activate(tracking)
        self.client = retry_transient(MlflowClient)
        experiment_id = retry_transient(
            ensure_experiment, self.client, cfg.tracking.experiment_name, tracking
        )
        overrides = list(config.hydra.overrides.task)
        tags = {
            Runs.KIND: "sweep",
            **code_version(),
            **owner_tags(),
            Sweep.OVERRIDES: " ".join(overrides),
            Sweep.LAUNCHER: str(config.hydra.launcher.get("_target_", "")),
            Sweep.SWEEPER: str(config.hydra.sweeper.get("_target_", "")),
        }
        adopted = os.environ.pop(Env.SWEEP_PARENT, None)
        if adopted:  # `mlflow run . -P hydra_options="-m ..."`: its run is the sweep run
            os.environ.pop(Env.RUN_ID, None)
            self.run_id = adopted
            for key, value in tags.items():
                self.client.set_tag(adopted, key, value)
        else:
            run = self.client.create_run(experiment_id, run_name="sweep", tags=tags)
            self.run_id = run.info.run_id
        self.client.log_text(self.run_id, json.dumps(_sweep_grid(config), indent=2), "grid.json")
        os.environ[Env.SWEEP_RUN_ID] = self.run_id
        shared = shared_stages(cfg, swept_keys(config))
        if shared:
            log.info("sweep: running the stages every job shares once: %s", ", ".join(shared))
            shared_cfg = cfg.copy()
            shared_cfg.steps = shared
            try:
                run_pipeline(shared_cfg, overrides, parent_run_id=self.run_id, role="shared")
            except PipelineError as exc:
                # The jobs will run (and report) these stages themselves.
                log.warning("sweep: the shared stages failed: %s", exc)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        status = getattr(job_return, "status", None)
        if status is not None and status.name == "FAILED":
            self.failed = True

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not (self.client and self.run_id):
            return
        try:
            self._finish(task_config(config))
        except Exception as exc:  # the sweep run must not stay RUNNING, whatever happened
            self.failed = True
            record_error(self.run_id, exc)
            log.error("sweep: %s", exc)
        finally:
            os.environ.pop(Env.SWEEP_RUN_ID, None)
            failed = self.failed or SweepRun.failures > 0
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")

    def _finish(self, cfg: DictConfig) -> None:
        """The summary, then the best job registered (a ``register`` run under the sweep)."""
        summary = summarize_sweep(self.client, self.run_id, cfg)
        SweepRun.failures = sum(row["status"] != "FINISHED" for row in summary.rows)
        if summary.best is None or "register" not in cfg.steps:
            return
        overrides = split_overrides(summary.best["overrides"])
        best_cfg = load_config(
            [*overrides, "steps=[register]", f"runner.upstream_run_id={summary.best['run_id']}"]
        )
        result = run_pipeline(best_cfg, overrides, parent_run_id=self.run_id, role="register")
        log.info("sweep: %s", describe(result))

    @staticmethod
    def close_abandoned() -> None:
        """Mark FAILED a sweep run whose multirun stopped before ``on_multirun_end``.

        Hydra skips that callback when the sweep itself raises (a job's overrides do not
        compose), which would leave the sweep run RUNNING forever.
        """
        run_id = os.environ.pop(Env.SWEEP_RUN_ID, None)
        if run_id:
            MlflowClient().set_terminated(run_id, "FAILED")


def record_failed_job(overrides: list[str], error: BaseException) -> None:
    """A sweep job that failed before its pipeline run existed (its config did not check):
    a FAILED pipeline run under the sweep run says so, in the UI and in the summary."""
    sweep_run_id = os.environ.get(Env.SWEEP_RUN_ID)
    if not sweep_run_id:
        return
    client = retry_transient(MlflowClient)
    experiment_id = client.get_run(sweep_run_id).info.experiment_id
    tags = {
        Runs.KIND: "pipeline",
        Sweep.ROLE: "job",
        MLflow.PARENT: sweep_run_id,
        Runs.OVERRIDES: " ".join(overrides),
        Runs.ERROR: str(error)[:5000],
    }
    run = client.create_run(experiment_id, run_name="pipeline", tags=tags)
    client.set_terminated(run.info.run_id, "FAILED")


def task_config(config: DictConfig) -> DictConfig:
    """The pipeline config inside a Hydra callback's config (without the ``hydra`` node)."""
    cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    cfg.pop("hydra", None)
    OmegaConf.resolve(cfg)
    return cfg


def swept_keys(config: DictConfig) -> set[str]:
    """The config keys a sweep varies: sweep overrides (``model=a,b``, ``model.C=0.1,1``) and
    the search space of a sweeper (``hydra.sweeper.params``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: set[str] = set()
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys |= {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    params = config.hydra.sweeper.get("params") or {}
    keys |= {str(k) for k in params}
    return keys


def shared_stages(cfg: DictConfig, keys: set[str]) -> list[str]:
    """The stages (in order) whose config no swept key reaches, nor that of a stage they read
    from: every job would compute them identically. ``seed`` reaches every stage with a
    ``seed_keys`` entry (split, train). Only an optimisation: the cache, not this list, decides
    what a job reuses."""
    groups = {key.split(".")[0].split("/")[0] for key in keys}
    made_by = producers()
    shared: list[str] = []
    for stage in order(list(cfg.steps)):
        if stage.name == "register" or groups & set(stage.config_keys):
            continue
        if "seed" in groups and stage.seed_keys:
            continue
        inputs = (*stage.inputs, *stage.schema_inputs)
        if all(made_by[d.name].name in shared for d in inputs):
            shared.append(stage.name)
    return shared


def _sweep_grid(config: DictConfig) -> dict[str, Any]:
    params = config.hydra.sweeper.get("params") or {}
    return {
        "overrides": list(config.hydra.overrides.task),
        "search_space": {str(k): str(v) for k, v in params.items()},
        "sweeper": str(config.hydra.sweeper.get("_target_", "")),
        "launcher": str(config.hydra.launcher.get("_target_", "")),
    }


@dataclass
class SweepSummary:
    metric: str
    greater_is_better: bool
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None


def summarize_sweep(client: MlflowClient, sweep_run_id: str, cfg: DictConfig) -> SweepSummary:
    """Every job of the sweep with its config and metrics, logged as ``sweep_summary.csv`` on
    the sweep run, and the best FINISHED job on the promotion metric (tags
    ``pipeline.sweep.best_run`` / ``best_overrides``, metric ``best_<metric>``)."""
    sweep = client.get_run(sweep_run_id)
    experiment_id = sweep.info.experiment_id
    metric, greater_is_better = promotion_metric(cfg)
    jobs = client.search_runs(
        [experiment_id],
        f"tags.`{MLflow.PARENT}` = '{sweep_run_id}' and tags.`{Sweep.ROLE}` = 'job'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    rows: list[dict[str, Any]] = []
    for job in jobs:
        evaluate = find_stage_run(client, experiment_id, "evaluate", job.info.run_id)
        metrics = client.get_run(evaluate).data.metrics if evaluate else {}
        rows.append(
            {
                "run_id": job.info.run_id,
                "overrides": job.data.tags.get(Runs.OVERRIDES, ""),
                "status": job.info.status,
                **{m: metrics.get(m) for m in METRICS[Task(cfg.data.task).value]},
            }
        )
    scored = [r for r in rows if r["status"] == "FINISHED" and r.get(metric) is not None]
    best = None
    if scored:
        pick = max if greater_is_better else min
        best = pick(scored, key=lambda r: r[metric])
        client.set_tag(sweep_run_id, Sweep.BEST, best["run_id"])
        client.set_tag(sweep_run_id, Sweep.BEST_OVERRIDES, best["overrides"])
        client.log_metric(sweep_run_id, f"best_{metric}", best[metric])
    client.log_metric(sweep_run_id, "jobs", len(rows))
    client.log_metric(sweep_run_id, "jobs_failed", sum(r["status"] != "FINISHED" for r in rows))
    table = pd.DataFrame(rows)
    if not table.empty:
        table["best"] = table["run_id"] == (best or {}).get("run_id")
    save_text(client, sweep_run_id, SWEEP_SUMMARY, table.to_csv(index=False))
    for row in rows:
        mark = "*" if best and row["run_id"] == best["run_id"] else " "
        log.info(
            "sweep %s %s %s=%s %s", mark, row["status"], metric, row.get(metric), row["overrides"]
        )
    return SweepSummary(metric, greater_is_better, rows, best)


def objective(result: PipelineResult, cfg: DictConfig) -> float | None:
    """The value a hyperparameter search maximises for a finished job: the promotion metric
    of its evaluate run, negated when lower is better."""
    run_id = result.stage_run_ids.get("evaluate")
    if not run_id:
        return None
    metric, greater_is_better = promotion_metric(cfg)
    value = MlflowClient().get_run(run_id).data.metrics.get(metric)
    if value is None:
        return None
    return float(value) if greater_is_better else -float(value)


def cache_summary(decisions: dict[str, cache.Decision]) -> str:
    return " ".join(f"{name}={d.status}" for name, d in decisions.items())


def describe(result: PipelineResult) -> str:
    """A few lines for the terminal: where the runs are, what the cache did, and what happened
    to the model."""
    lines = [f"pipeline run {result.pipeline_run_id} finished (experiment {result.experiment_id})"]
    if result.decisions:
        hits = [n for n, d in result.decisions.items() if d.hit]
        ran = [n for n, d in result.decisions.items() if not d.hit]
        lines.append(
            f"cache: {len(hits)} hit(s) [{', '.join(hits)}], {len(ran)} ran [{', '.join(ran)}]"
        )
    if result.drift is not None:
        from mlflow_pipeline.data.drift import summary

        lines.append(summary(result.drift))
    promo = result.promotion
    register = result.decisions.get("register")
    if promo and register is not None and register.hit:
        lines.append(
            f"register: reused run {register.source_run_id}; nothing registered, no alias "
            f"moved ({promo['model_name']} v{promo['version']} came from that run)"
        )
    elif promo:
        if promo.get("moved_outside"):
            lines.append(
                f"found alias move(s) made outside mlflow-pipeline: "
                f"{'; '.join(promo['moved_outside'])} (recorded in {promo['audit_experiment']})"
            )
        champion = promo["champion_version_after"]
        verdict = "promoted to champion" if promo["promote"] else "not promoted"
        lines.append(
            f"registered {promo['model_name']} v{promo['version']}: {verdict} "
            f"({promo['reason']}); champion is v{champion}"
        )
    return "\n".join(lines)


def plan(cfg: DictConfig) -> list[cache.Decision]:
    """What running ``cfg.steps`` would do, stage by stage, without running anything: a hit
    (and the run it reuses) or a miss and why. Stages downstream of a miss are 'pending'."""
    tracking = resolve_tracking(cfg)
    activate(tracking)
    client = retry_transient(MlflowClient)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment_name)
    experiment_id = experiment.experiment_id if experiment else None
    ctx = RunContext(
        client=client,
        experiment_id=experiment_id or "",
        pipeline_run_id=None,
        runner_mode=cfg.runner.mode,
        upstream_run_id=cfg.runner.upstream_run_id,
        services={"registry": ModelRegistry.from_config(client, cfg)},
    )
    made_by = producers()
    available: dict[str, Handoff] = {}
    recomputed: set[str] = set()
    decisions = []
    for stage in order(list(cfg.steps)):
        names = [d.name for d in (*stage.inputs, *stage.schema_inputs)]
        pending = tuple(n for n in names if made_by[n].name in recomputed)
        if experiment_id is None:
            decision = cache.Decision(stage.name, "miss", None, ["no earlier run (new experiment)"])
        elif pending:
            decision = cache.decide(stage, cfg, client, experiment_id, {}, pending=pending)
        else:
            try:
                available.update(resolve_inputs(stage, ctx, available))
                decision = decide(stage, cfg, ctx, available)
            except StageError as exc:
                decision = cache.Decision(stage.name, "error", None, [str(exc)])
        decisions.append(decision)
        if decision.hit:
            outputs = {d.name: d for d in stage.outputs}
            source = client.get_run(decision.source_run_id)
            for name in outputs:
                available[name] = Handoff(
                    run_id=source.info.run_id,
                    digest=source.data.tags.get(Runs.DIGEST_OUTPUT + name),
                )
        else:
            recomputed.add(stage.name)
    return decisions


def describe_plan(decisions: list[cache.Decision]) -> str:
    lines = []
    for decision in decisions:
        if decision.hit:
            lines.append(f"{decision.stage:<9} hit   reuses run {decision.source_run_id}")
        else:
            status = "runs" if decision.status == "pending" else decision.status
            lines.append(f"{decision.stage:<9} {status:<5} {'; '.join(decision.reasons)}")
    return "\n".join(lines)
