"""The audit trail of alias moves: who or what moved ``champion``, ``challenger`` or
``rollback``, when, why, and with which scores.

The trail is an MLflow experiment (``registry.audit_experiment``, default ``<model>-audit``)
holding one FINISHED run per move, so it is read in the MLflow UI like any run table (the
User column is who moved it) or with ``mlflow-pipeline audit NAME``. Three kinds of move:

- ``pipeline``: the register stage moved it; the run names the pipeline and register runs,
  the rule's reason, metric and both scores.
- ``cli``: ``mlflow-pipeline promote`` moved it; the run names the user and the reason given.
- ``external``: someone moved it outside mlflow-pipeline (the registry UI, the REST API, a
  script). MLflow keeps no history of aliases, so the next register stage (or ``promote``)
  finds the difference between the registry and the trail and records it: who is unknown and
  the move happened between the previous record of that alias and the detection.

Tags and metrics of an audit run: see ``tags.Audit``; metrics ``challenger_score`` and
``champion_score`` when the move came from the promotion rule. An audit run is a record once
it is FINISHED: it is written RUNNING with its owner tags (host, pid), so that a record whose
writer died half-way is finished by the next promotion (when it belongs to an interrupted
plan, see plan.py) or marked FAILED (``reap``), and never read as a record.
"""

from __future__ import annotations

import getpass
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_pipeline.errors import ConfigError, RegistryError
from mlflow_pipeline.registry.failpoint import failpoint
from mlflow_pipeline.store.tracking import owner_tags, reap_dead_runs
from mlflow_pipeline.tags import Audit, MLflow

KIND_PIPELINE = "pipeline"
KIND_CLI = "cli"
KIND_EXTERNAL = "external"

NONE = "none"  # an alias that did not exist (before) or was removed (after)
FINISHED = "attributes.status = 'FINISHED'"  # only a finished audit run is a record
UNKNOWN_USER = "unknown"
EXTERNAL_ACTOR = "outside mlflow-pipeline (registry UI, REST API or a script)"
MAX_TAG = 5000


@dataclass(frozen=True)
class Why:
    """Who or what moves an alias, and why."""

    kind: str
    actor: str
    user: str
    reason: str
    pipeline_run: str | None = None
    stage_run: str | None = None
    metric: str | None = None
    challenger_score: float | None = None
    champion_score: float | None = None


@dataclass(frozen=True, kw_only=True)
class Move:
    """One alias move: what moved (versions as strings; None means the alias was absent),
    ``why``, and when and where it was recorded. ``why``'s fields read through the move too
    (``move.reason``, ``move.user``...): the trail's readers name them so."""

    model: str
    alias: str
    from_version: str | None
    to_version: str | None
    why: Why
    time_ms: int = 0
    host: str = ""
    moved_after_ms: int | None = None  # external moves: the previous record of this alias
    run_id: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, model: str, alias: str, before: str | None, after: str | None, why: Why) -> Move:
        """The move of ``alias`` from version ``before`` to ``after``, for ``why``."""
        return cls(model=model, alias=alias, from_version=before, to_version=after, why=why)

    @property
    def kind(self) -> str:
        return self.why.kind

    @property
    def actor(self) -> str:
        return self.why.actor

    @property
    def user(self) -> str:
        return self.why.user

    @property
    def reason(self) -> str:
        return self.why.reason

    @property
    def pipeline_run(self) -> str | None:
        return self.why.pipeline_run

    @property
    def stage_run(self) -> str | None:
        return self.why.stage_run

    @property
    def metric(self) -> str | None:
        return self.why.metric

    @property
    def challenger_score(self) -> float | None:
        return self.why.challenger_score

    @property
    def champion_score(self) -> float | None:
        return self.why.champion_score

    @property
    def title(self) -> str:
        """``champion: v1 -> v2`` (the audit run's name)."""
        return f"{self.alias}: {_v(self.from_version)} -> {_v(self.to_version)}"


def current_user() -> str:
    """Who runs this process, as the audit trail names them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers with a bare uid)
        return UNKNOWN_USER


def _v(version: str | None) -> str:
    return NONE if version is None else f"v{version}"


def iso(time_ms: int | None, *, milliseconds: bool = False) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS[.mmm] UTC`` (``-`` for none)."""
    if not time_ms:
        return "-"
    when = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{time_ms % 1000:03d} UTC" if milliseconds else f"{text} UTC"


class AuditTrail:
    """The moves of one registered model's aliases, in its audit experiment."""

    _clock_lock = threading.Lock()
    _last_ms = 0

    def __init__(
        self,
        client: MlflowClient,
        model: str,
        experiment: str,
        *,
        experiment_id: str | None = None,
        aliases: tuple[str, ...] = (),
        artifact_location: str | None = None,
    ) -> None:
        """``experiment`` is found by name, or by ``experiment_id`` when given (the id the
        model's tag recorded: a renamed experiment is still found). ``aliases`` are the alias
        names the pipeline manages, recorded on the model for ``audit`` and ``promote``;
        ``artifact_location`` is where the experiment is created (None: the store's default)."""
        self.client = client
        self.artifact_location = artifact_location
        self.model = model
        self.experiment = experiment
        self.aliases = aliases
        self._given_id = experiment_id
        self._experiment_id: str | None = None
        self._model_tagged = False

    # ---- the experiment --------------------------------------------------------------------

    def experiment_id(self, *, create: bool) -> str | None:
        """The audit experiment's id; created when missing and ``create``, else None.

        Raises RegistryError when it is deleted, or when the id the model's tag recorded is
        gone (a new trail would silently lose the history)."""
        if self._experiment_id is not None:
            return self._experiment_id
        if self._given_id is not None:
            try:
                found = self.client.get_experiment(self._given_id)
            except MlflowException as exc:
                raise RegistryError(
                    f"the audit experiment of model '{self.model}' (id {self._given_id}, tag "
                    f"{Audit.MODEL_EXPERIMENT_ID} of the registered model) does not exist any "
                    f"more: {exc.message}"
                ) from exc
            self.experiment = found.name
        else:
            found = self.client.get_experiment_by_name(self.experiment)
        if found is None and create:
            try:
                self._experiment_id = self.client.create_experiment(
                    self.experiment,
                    artifact_location=self.artifact_location,
                    tags={MLflow.NOTE: _experiment_note(self.model)},
                )
                return self._experiment_id
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # a concurrent run made it
                    raise RegistryError(
                        f"cannot create the audit experiment '{self.experiment}': {exc.message}"
                    ) from exc
                found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return None
        if found.lifecycle_stage != "active":
            raise RegistryError(
                f"the audit experiment '{self.experiment}' of model '{self.model}' is deleted: "
                f"restore it with `mlflow experiments restore --experiment-id "
                f"{found.experiment_id}`"
            )
        self._experiment_id = found.experiment_id
        return self._experiment_id

    # ---- reading ---------------------------------------------------------------------------

    def moves(self, alias: str | None = None, *, newest_first: bool = False) -> list[Move]:
        """The recorded moves of this model (of ``alias`` only, when given), oldest first."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return []
        query = self._query(alias)
        order = "DESC" if newest_first else "ASC"
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                filter_string=query,
                order_by=[f"attributes.start_time {order}"],
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return [_move_of(run) for run in runs]

    def _query(self, alias: str | None) -> str:
        query = f"{FINISHED} and tags.`{Audit.MODEL}` = {quoted(self.model)}"
        if alias is not None:
            query += f" and tags.`{Audit.ALIAS}` = {quoted(alias)}"
        return query

    def last(self, alias: str) -> Move | None:
        """The newest record of ``alias``, or None."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return None
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=self._query(alias),
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return _move_of(runs[0]) if runs else None

    def unrecorded(self, current: Mapping[str, str | None]) -> list[Move]:
        """Moves the registry shows and the trail does not: for each alias in ``current``
        (alias -> the version holding it now, None when absent), the difference from its
        last record. Not recorded; see ``reconcile``."""
        found = []
        for alias, version in current.items():
            last = self.last(alias)
            recorded = last.to_version if last is not None else None
            if recorded == version:
                continue
            if last is None:
                reason = (
                    f"found on v{version} with no earlier record: set before auditing began "
                    "or outside mlflow-pipeline"
                )
            elif version is None:
                reason = f"removed outside mlflow-pipeline (last recorded on v{recorded})"
            else:
                reason = (
                    f"moved outside mlflow-pipeline from {_v(recorded)} to v{version} "
                    f"after {iso(last.time_ms)}"
                )
            found.append(
                Move(
                    model=self.model,
                    alias=alias,
                    from_version=recorded,
                    to_version=version,
                    why=Why(
                        kind=KIND_EXTERNAL, actor=EXTERNAL_ACTOR, user=UNKNOWN_USER, reason=reason
                    ),
                    moved_after_ms=last.time_ms if last is not None else None,
                )
            )
        return found

    # ---- writing ---------------------------------------------------------------------------

    def reconcile(
        self, current: Mapping[str, str | None], *, detected_by: str | None = None
    ) -> list[Move]:
        """Record the moves made outside mlflow-pipeline (see ``unrecorded``); returns them.
        ``detected_by`` (a run id) is kept as the detecting pipeline run."""
        moves = self.unrecorded(current)
        return [
            self.record(replace(move, why=replace(move.why, pipeline_run=detected_by)))
            for move in moves
        ]

    def record(self, move: Move, *, plan: str | None = None, step: int | None = None) -> Move:
        """Write ``move`` as a FINISHED run of the audit experiment (step ``step`` of plan
        ``plan``, when it is one); returns it with its time and run id."""
        experiment_id = self.experiment_id(create=True)
        # After the alias's newest record even across processes and clocks: the trail's order
        # per alias is what finding outside moves relies on.
        previous = self.last(move.alias)
        now = max(self._now_ms(), previous.time_ms + 1 if previous is not None else 0)
        move = replace(move, time_ms=now, host=move.host or socket.gethostname())
        tags = {
            MLflow.RUN_NAME: move.title,
            MLflow.USER: move.user,
            Audit.MODEL: move.model,
            Audit.ALIAS: move.alias,
            Audit.FROM: move.from_version or NONE,
            Audit.TO: move.to_version or NONE,
            Audit.KIND: move.kind,
            Audit.ACTOR: move.actor,
            Audit.REASON: move.reason[:MAX_TAG],
            Audit.HOST: move.host,
            **owner_tags(),
        }
        optional = {
            Audit.PIPELINE_RUN: move.pipeline_run,
            Audit.STAGE_RUN: move.stage_run,
            Audit.METRIC: move.metric,
            Audit.SINCE: str(move.moved_after_ms) if move.moved_after_ms else None,
            Audit.PLAN: plan,
            Audit.STEP: None if step is None else str(step),
        }
        tags.update({k: v for k, v in optional.items() if v})
        try:
            run = self.client.create_run(
                experiment_id, start_time=now, tags=tags, run_name=move.title
            )
            failpoint(f"recording.{move.alias}")
            self._finish(run.info.run_id, move, now)
        except MlflowException as exc:
            raise RegistryError(
                f"cannot record the move {move.title} of '{move.model}' in the audit "
                f"experiment '{self.experiment}': {exc.message}"
            ) from exc
        return replace(move, run_id=run.info.run_id)

    def complete(self, run_id: str, move: Move) -> Move:
        """Finish the half-written record ``run_id`` of ``move`` (its writer died after
        creating it); returns the move as recorded."""
        run = self.client.get_run(run_id)
        try:
            self.client.set_tag(run_id, Audit.COMPLETED, "true")
            self._finish(run_id, move, run.info.start_time)
        except MlflowException as exc:
            raise RegistryError(
                f"cannot complete the record of {move.title} of '{move.model}' (audit run "
                f"{run_id}): {exc.message}"
            ) from exc
        return replace(move, time_ms=run.info.start_time, run_id=run_id)

    def _finish(self, run_id: str, move: Move, time_ms: int) -> None:
        scores = {"challenger_score": move.challenger_score, "champion_score": move.champion_score}
        metrics = [Metric(k, float(v), time_ms, 0) for k, v in scores.items() if v is not None]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)
        self.client.set_terminated(run_id, "FINISHED", end_time=time_ms)
        if not self._model_tagged:
            self._tag_model(self.experiment_id(create=True))

    def plan_records(self, plan: str) -> dict[int, Run]:
        """The audit runs written for plan ``plan``, by step, whatever their status."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return {}
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{Audit.PLAN}` = {quoted(plan)}",
            max_results=1000,
        )
        found: dict[int, Run] = {}
        for run in runs:  # a FINISHED record wins over a half-written one of the same step
            step = int(run.data.tags.get(Audit.STEP, "-1"))
            if step not in found or run.info.status == "FINISHED":
                found[step] = run
        return found

    def reap(self) -> list[str]:
        """Mark FAILED the audit runs whose writer died before finishing them (not records;
        the move they describe, if it happened, is recorded again by ``reconcile``)."""
        experiment_id = self.experiment_id(create=False)
        if experiment_id is None:
            return []
        try:
            return reap_dead_runs(self.client, experiment_id)
        except MlflowException as exc:
            raise RegistryError(
                f"cannot check the audit experiment '{self.experiment}' for runs of dead "
                f"processes: {exc.message}"
            ) from exc

    def _tag_model(self, experiment_id: str) -> None:
        tags = {Audit.MODEL_EXPERIMENT: self.experiment, Audit.MODEL_EXPERIMENT_ID: experiment_id}
        if self.aliases:
            tags[Audit.MODEL_ALIASES] = ",".join(self.aliases)
        for key, value in tags.items():
            self.client.set_registered_model_tag(self.model, key, value)
        self._model_tagged = True

    @classmethod
    def _now_ms(cls) -> int:
        """Milliseconds, strictly increasing in this process (moves made back to back keep
        their order in the trail)."""
        with cls._clock_lock:
            now = max(time.time_ns() // 1_000_000, cls._last_ms + 1)
            cls._last_ms = now
            return now


def quoted(value: str) -> str:
    """``value`` as a string literal of an MLflow search filter (which has no escapes: a value
    holding ``'`` is written in double quotes). Raises ConfigError when it holds both."""
    if "'" not in value:
        return f"'{value}'"
    if '"' in value:
        raise ConfigError(f"{value!r} has both quote characters: MLflow cannot search for it")
    return f'"{value}"'


def _experiment_note(model: str) -> str:
    return (
        f"Audit trail of the aliases of registered model `{model}`, written by mlflow-pipeline: "
        "one run per move (User = who moved it; kind external = moved outside mlflow-pipeline, "
        "found by the next run). `mlflow-pipeline audit " + model + "` prints it."
    )


def _move_of(run: Run) -> Move:
    tags = run.data.tags
    metrics = run.data.metrics

    def version(key: str) -> str | None:
        value = tags.get(key, NONE)
        return None if value == NONE else value

    since = tags.get(Audit.SINCE)
    why = Why(
        kind=tags.get(Audit.KIND, ""),
        actor=tags.get(Audit.ACTOR, ""),
        user=tags.get(MLflow.USER, UNKNOWN_USER),
        reason=tags.get(Audit.REASON, ""),
        pipeline_run=tags.get(Audit.PIPELINE_RUN),
        stage_run=tags.get(Audit.STAGE_RUN),
        metric=tags.get(Audit.METRIC),
        challenger_score=metrics.get("challenger_score"),
        champion_score=metrics.get("champion_score"),
    )
    return Move(
        model=tags.get(Audit.MODEL, ""),
        alias=tags.get(Audit.ALIAS, ""),
        from_version=version(Audit.FROM),
        to_version=version(Audit.TO),
        why=why,
        time_ms=run.info.start_time,
        host=tags.get(Audit.HOST, ""),
        moved_after_ms=int(since) if since else None,
        run_id=run.info.run_id,
    )


def describe(
    moves: Iterable[Move], current: Mapping[str, str | None], pending: Iterable[Move] = ()
) -> str:
    """The trail as a table, oldest first; then the aliases now and the moves made outside
    mlflow-pipeline that are not recorded yet (``pending``)."""
    rows = [("when (UTC)", "alias", "from", "to", "kind", "who", "scores", "why")]
    for move in moves:
        rows.append(
            (
                iso(move.time_ms).removesuffix(" UTC"),
                move.alias,
                _v(move.from_version),
                _v(move.to_version),
                move.kind,
                move.user,
                _scores(move),
                move.reason,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no recorded moves)")
    lines.append("now: " + ", ".join(f"{a} {_v(v)}" for a, v in current.items()))
    for move in pending:
        lines.append(f"not recorded yet: {move.title}: {move.reason} (the next run records it)")
    return "\n".join(line.rstrip() for line in lines)


def _scores(move: Move) -> str:
    if move.challenger_score is None:
        return ""
    text = f"{move.metric or 'score'} {move.challenger_score:.4f}"
    if move.champion_score is not None:
        text += f" vs {move.champion_score:.4f}"
    return text
