"""Where a stage's inputs come from: this pipeline run, or ONE earlier pipeline run whose
producing stages all FINISHED with today's settings, and a check that the inputs belong
together."""

from __future__ import annotations

import dataclasses
import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.engine import cache
from mlflow_pipeline.engine.spec import Stage
from mlflow_pipeline.engine.stage import Handoff, RunContext
from mlflow_pipeline.errors import StageError
from mlflow_pipeline.tags import Cache, Runs

log = logging.getLogger(__name__)


def resolve_inputs(
    stage: Stage, cfg: DictConfig, ctx: RunContext, available: dict[str, Handoff]
) -> dict[str, Handoff]:
    """Find the run that produced each input of ``stage`` not already ``available``.

    An input produced in this pipeline run comes from it. All other inputs come from ONE
    earlier pipeline run: ``ctx.upstream_run_id``, else the newest pipeline run in the
    experiment in which every stage producing them FINISHED (a failed or half-run pipeline is
    never a source) and which computed them, and the stages before them, with the settings of
    ``cfg``: the same config and the same content of the files they read (see
    SettingsCheck). Then checks that the inputs belong together (see check_lineage).
    Raises StageError when there is no such run or the inputs do not belong together; an
    explicit ``ctx.upstream_run_id`` computed with other settings is used, with a warning.
    """
    made_by = ctx.pipeline.producers()
    found: dict[str, Handoff] = {}
    elsewhere: list[str] = []
    for dataset in stage.reads:
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
        runs = _upstream_stage_runs(stage, cfg, ctx, sorted({made_by[n].name for n in elsewhere}))
        for name in elsewhere:
            found[name] = Handoff(run_id=runs[made_by[name].name])
    for name, handoff in found.items():
        log.info("stage %s: input '%s' from run %s", stage.name, name, handoff.run_id)
    names = [d.name for d in stage.reads]
    check_lineage(stage, {n: (found.get(n) or available[n]).run_id for n in names}, ctx.client)
    return found


def _upstream_stage_runs(
    stage: Stage, cfg: DictConfig, ctx: RunContext, needed: list[str]
) -> dict[str, str]:
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
        differences = SettingsCheck(cfg, ctx).differences(ctx.upstream_run_id, needed)
        if differences:
            log.warning(
                "stage %s: runner.upstream_run_id=%s computed its inputs with other settings "
                "than this run's (%s); used as asked, but this run's config and lineage do not "
                "describe that data",
                stage.name,
                ctx.upstream_run_id,
                "; ".join(differences),
            )
        return runs
    first, *others = needed
    check = SettingsCheck(cfg, ctx)
    newest_differing: tuple[str, list[str]] | None = None
    compared: set[str] = set()
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
        if not all(runs.values()) or pipeline_run_id in compared:
            continue
        compared.add(pipeline_run_id)
        differences = check.differences(pipeline_run_id, needed)
        if not differences:
            return runs
        newest_differing = newest_differing or (pipeline_run_id, differences)
        if len(compared) >= MAX_CANDIDATES:
            break
    if newest_differing is not None:
        pipeline_run_id, differences = newest_differing
        earliest = differences[0].split(":", 1)[0]
        raise StageError(
            f"no earlier pipeline run in experiment {ctx.experiment_id} computed stage(s) "
            f"{', '.join(needed)} with this run's settings; the newest that has them (pipeline "
            f"run {pipeline_run_id}) differs: {'; '.join(differences)}. Include {earliest} and "
            f"the stages after it in steps, or set runner.upstream_run_id={pipeline_run_id} "
            "to use it anyway",
            stage=stage.name,
        )
    raise StageError(
        f"no earlier pipeline run in experiment {ctx.experiment_id} has FINISHED runs of "
        f"stage(s) {', '.join(needed)}; include them in steps or set runner.upstream_run_id",
        stage=stage.name,
    )


# At most this many earlier pipeline runs are compared with today's settings before a slice
# gives up (each comparison reads a manifest per stage).
MAX_CANDIDATES = 20


class SettingsCheck:
    """Compares earlier pipeline runs with today's settings (see ``differences``), remembering
    each stage run's verdict: the candidates of one search share most of their runs."""

    def __init__(self, cfg: DictConfig, ctx: RunContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self._verdicts: dict[str, list[str]] = {}

    def differences(self, pipeline_run_id: str, needed: list[str]) -> list[str]:
        """How pipeline run ``pipeline_run_id`` computed the stages ``needed``, and the stages
        whose data they were computed from (through stage inputs, not the schema inputs that
        only shape checks), differs from today's settings: config and the digests of the files
        a stage reads, as the cache explains a miss ("ingest: file changed: data.path digest
        ..."). Each stage is compared as that pipeline run ran it (a hit: with the manifest of
        the run it reused, whose key it matched). Code and package versions are not compared:
        not running a stage is the way to keep its results across a code change. A stage that
        did not run in that pipeline run, or a run older than the cache (no key), is not
        compared; a run whose manifest cannot be read is a difference. In pipeline order."""
        pipeline = self.ctx.pipeline
        made_by = pipeline.producers()
        stages, todo = set(), list(needed)
        while todo:
            name = todo.pop()
            if name not in stages:
                stages.add(name)
                todo += [made_by[d.name].name for d in pipeline.stage_named(name).inputs]
        reasons: list[str] = []
        for stage in pipeline.stages:
            if stage.name in stages:
                reasons += self._stage(stage, pipeline_run_id)
        return reasons

    def _stage(self, stage: Stage, pipeline_run_id: str) -> list[str]:
        from mlflow_pipeline.store import artifacts

        client = self.ctx.client
        try:
            runs = client.search_runs(
                [self.ctx.experiment_id],
                f"tags.`{Runs.STAGE}` = '{stage.name}' and "
                f"tags.`{Runs.PIPELINE_RUN}` = '{pipeline_run_id}' and "
                "attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        except MlflowException as exc:
            return [f"{stage.name}: its run could not be read ({exc.message})"]
        if not runs or Cache.KEY not in runs[0].data.tags:
            return []
        run = runs[0]
        holder = run.data.tags.get(Cache.SOURCE) or run.info.run_id
        if holder not in self._verdicts:
            try:
                stored = cache.Manifest.from_json(artifacts.load_text(holder, cache.MANIFEST))
            except Exception as exc:  # a store or artifact fault: never taken for a match
                self._verdicts[holder] = [f"{stage.name}: its manifest could not be read ({exc})"]
            else:
                self._verdicts[holder] = [
                    f"{stage.name}: {reason}" for reason in self._compare(stage, stored)
                ]
        return self._verdicts[holder]

    def _compare(self, stage: Stage, stored: cache.Manifest) -> list[str]:
        current = cache.build_manifest(stage, self.cfg, stored.inputs)
        # What the stage's key no longer holds (a manifest from before data.path became an
        # ignore key of the later stages) is not a difference.
        ignored = [
            key
            for key in stored.config
            if any(key == i or key.startswith(i + ".") for i in stage.ignore_keys)
        ]
        stored = dataclasses.replace(
            stored,
            config={k: v for k, v in stored.config.items() if k not in ignored},
            files={k: v for k, v in stored.files.items() if k in stage.file_keys},
        )
        current = dataclasses.replace(
            current, code=stored.code, schemas=stored.schemas, packages=stored.packages
        )
        if current.key == stored.key:
            return []
        return cache.explain(stored, current)


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
