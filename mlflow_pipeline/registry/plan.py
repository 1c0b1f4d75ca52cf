"""Alias moves that survive a crash: a write-ahead plan on the registered model.

Before its first move, a promotion writes every move it will make (alias, from, to, and why)
as one tag of the registered model (``Registry.PLAN``; one tag write is atomic). Then, per
step: move the alias, record the move in the audit trail (tagged with the plan id and step).
Last, it deletes the tag. A process killed anywhere in between leaves the tag; the next
promotion of that model, under the same lock, finishes the plan before it reads anything:
each step's alias is moved if it is not there yet and its record is written, or finished if
the dead process had only created it. So the end state is the one an uninterrupted
promotion leaves (one champion, rollback on the champion it replaced), and the pipeline's
own move is recorded as the pipeline's, never found later as a move "outside
mlflow-pipeline". A step whose alias was moved elsewhere meanwhile (by a human, in the UI)
is not forced back: it and the steps after it are dropped, and reconcile records the human's
move.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import asdict, dataclass, replace

from mlflow.exceptions import MlflowException

from mlflow_pipeline.errors import RegistryError
from mlflow_pipeline.registry.audit import Move, Why
from mlflow_pipeline.registry.failpoint import failpoint
from mlflow_pipeline.registry.lock import PromotionLock
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.tags import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """Move ``alias`` from ``from_version`` (None: absent) to ``to_version`` for ``why``."""

    alias: str
    from_version: str | None
    to_version: str
    why: Why

    def move(self, model: str) -> Move:
        return Move.of(model, self.alias, self.from_version, self.to_version, self.why)


@dataclass(frozen=True)
class Plan:
    """The moves of one promotion, in order, under one id."""

    id: str
    steps: tuple[Step, ...]

    @classmethod
    def of(cls, steps: list[Step]) -> Plan:
        return cls(id=uuid.uuid4().hex, steps=tuple(steps))

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "steps": [asdict(s) for s in self.steps]})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        steps = tuple(Step(**{**s, "why": Why(**s["why"])}) for s in data["steps"])
        return cls(id=data["id"], steps=steps)


@dataclass(frozen=True)
class Finished:
    """What finishing an interrupted plan did: the moves it made or recorded, and the steps
    it dropped because their alias had moved elsewhere meanwhile."""

    plan: Plan
    moves: list[Move]
    dropped: list[Step]

    def describe(self) -> str:
        text = f"finished an interrupted promotion (plan {self.plan.id}): " + (
            "; ".join(m.title for m in self.moves) or "nothing left to move"
        )
        if self.dropped:
            text += "; dropped (moved outside meanwhile): " + "; ".join(
                f"{s.alias} -> v{s.to_version}" for s in self.dropped
            )
        return text


def alias_steps(
    registry: ModelRegistry,
    alias: str,
    version: str,
    why: Why,
    *,
    rollback_reason: str | None,
    current: dict[str, str | None] | None = None,
) -> list[Step]:
    """The steps that point ``alias`` at ``version``: none when it is there already; when
    ``alias`` is the champion and it leaves a version, rollback follows to that version for
    ``why`` with ``rollback_reason`` (None: rollback stays). ``current``: the aliases now
    (read when not given)."""
    current = current or registry.current_aliases(alias)
    before = current.get(alias)
    if before == str(version):
        return []
    steps = [Step(alias, before, str(version), why)]
    rollback = registry.aliases.rollback
    if alias == registry.aliases.champion and before is not None and rollback_reason:
        if current.get(rollback) != before:
            reason = replace(why, reason=rollback_reason)
            steps.append(Step(rollback, current.get(rollback), before, reason))
    return steps


def carry_out(registry: ModelRegistry, steps: list[Step], lock: PromotionLock) -> list[Move]:
    """Make ``steps`` (under ``lock``) as a plan that a crash cannot leave half-done; returns
    the recorded moves in order. Raises RegistryError."""
    if not steps:
        return []
    plan = Plan.of(steps)
    lock.check()
    _write_plan(registry, plan)
    failpoint("planned")
    moves, _ = _run(registry, plan, lock, resuming=False)
    return moves


def finish_interrupted(registry: ModelRegistry, lock: PromotionLock) -> Finished | None:
    """Finish the plan a killed promotion left on the model (see the module's doc); None when
    there is none."""
    text = _model_tags(registry).get(Registry.PLAN)
    if not text:
        return None
    try:
        plan = Plan.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(
            f"the unfinished promotion plan on '{registry.name}' (tag {Registry.PLAN}) is "
            f"unreadable: {exc}; delete that tag after checking the aliases by hand"
        ) from exc
    moves, dropped = _run(registry, plan, lock, resuming=True)
    finished = Finished(plan, moves, dropped)
    log.warning("%s: %s", registry.name, finished.describe())
    return finished


def _run(
    registry: ModelRegistry, plan: Plan, lock: PromotionLock, *, resuming: bool
) -> tuple[list[Move], list[Step]]:
    """Each step of ``plan``: the alias moved unless there, the move recorded unless it is.
    Resuming, a step whose alias is neither where the plan found it nor where it goes is
    dropped with the steps after it."""
    records = registry.audit.plan_records(plan.id) if resuming else {}
    moves: list[Move] = []
    for index, step in enumerate(plan.steps):
        now = registry.current_aliases(step.alias).get(step.alias)
        if now != step.to_version:
            if resuming and now != step.from_version:
                _clear_plan(registry, lock)
                return moves, list(plan.steps[index:])
            lock.check()
            registry.set_alias(step.alias, step.to_version)
            failpoint(f"moved.{step.alias}")
        record = records.get(index)
        if record is None or record.info.status != "FINISHED":
            lock.check()
            move = step.move(registry.name)
            if record is not None and record.info.status == "RUNNING":
                moves.append(registry.audit.complete(record.info.run_id, move))
            else:
                moves.append(registry.audit.record(move, plan=plan.id, step=index))
            failpoint(f"recorded.{step.alias}")
    failpoint("done")
    _clear_plan(registry, lock)
    return moves, []


def _model_tags(registry: ModelRegistry) -> dict[str, str]:
    try:
        return dict(registry.client.get_registered_model(registry.name).tags)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise RegistryError(f"cannot read registered model '{registry.name}': {exc}") from exc


def _write_plan(registry: ModelRegistry, plan: Plan) -> None:
    try:
        registry.client.set_registered_model_tag(registry.name, Registry.PLAN, plan.to_json())
    except MlflowException as exc:
        raise RegistryError(
            f"cannot write the promotion plan on '{registry.name}': {exc.message}"
        ) from exc


def _clear_plan(registry: ModelRegistry, lock: PromotionLock) -> None:
    lock.check()
    try:
        registry.client.delete_registered_model_tag(registry.name, Registry.PLAN)
    except MlflowException as exc:
        raise RegistryError(
            f"cannot clear the promotion plan on '{registry.name}': {exc.message}"
        ) from exc
