"""The promotion lock: one holder at a time per registered model, across processes and hosts,
so that reading the champion, deciding and moving the aliases happen as one step.

Why the lock is a registered model (``<model>.promotion-lock``): creating a registered model
is the one atomic create-if-absent that every store MLflow's registry runs on offers (SQLite,
PostgreSQL, and a tracking server over HTTP, which uses the same SQL store): its name is a
unique key, so of N processes creating it at once exactly one succeeds, and the others get
RESOURCE_ALREADY_EXISTS. Tags and aliases cannot serve as a compare-and-set (a write
overwrites whatever is there), and a file lock would not reach a remote store. Releasing
deletes it; while it exists the registry UI lists it, with a description saying what it is.

The holder writes who it is (host, pid and the process's start time, like a run's owner
tags), a random token and a heartbeat it renews every ``ttl_s / 4`` seconds. A waiter breaks
the lock of a holder that is gone: on this host, a process that no longer exists; on another
host, a heartbeat older than ``ttl_s``. Breaking renames the lock to
``<model>.promotion-lock.broken-<token>``: a rename to a name derived from the token the
breaker saw succeeds at most once, so two waiters that saw the same dead holder cannot both
break it, and neither can break the live lock a third process took meanwhile (the rename
target exists already; it is deleted only after ``ttl_s``). The holder re-checks its token
before every write it makes under the lock (``check``), so a holder whose lock was broken
(paused past the TTL) stops instead of writing beside the new holder.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
import uuid

import psutil
from mlflow.entities.model_registry import RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_pipeline.errors import RegistryError
from mlflow_pipeline.registry.audit import iso, quoted
from mlflow_pipeline.store.tracking import owner_tags, retry_transient
from mlflow_pipeline.tags import Registry, Runs

log = logging.getLogger(__name__)

SUFFIX = ".promotion-lock"
BROKEN = ".broken-"
TTL_S = 120.0
POLL_S = 0.25


def lock_name(model: str) -> str:
    return model + SUFFIX


class PromotionLock:
    """``with PromotionLock(client, model, holder="pipeline run abc"):`` holds the promotion
    lock of ``model`` for the block. Raises RegistryError when it is not acquired within
    ``timeout_s`` (naming the holder), or when the store refuses."""

    def __init__(
        self,
        client: MlflowClient,
        model: str,
        *,
        holder: str,
        timeout_s: float = 600.0,
        ttl_s: float = TTL_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.client = client
        self.model = model
        self.name = lock_name(model)
        self.holder = holder
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.token = uuid.uuid4().hex
        self.held = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __enter__(self) -> PromotionLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ---- acquiring -------------------------------------------------------------------------

    def acquire(self) -> None:
        """Wait for the lock (breaking it when its holder is gone) and take it."""
        deadline = time.monotonic() + self.timeout_s
        waiting_for = None
        while not self._create():
            current = self._read()
            if current is None:  # released between our create and our read
                continue
            if current.tags.get(Registry.LOCK_TOKEN) == self.token:
                break  # our create went through although the store answered with an error
            gone = _gone(current.tags, self.ttl_s)
            if gone is not None:
                self._break(current, gone)
                continue
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"waited {self.timeout_s:.0f} s for the promotion lock of '{self.model}', "
                    f"held by {describe_holder(current.tags)}; if that process is gone for "
                    f"good, delete the registered model '{self.name}'"
                )
            if waiting_for != current.tags.get(Registry.LOCK_TOKEN):
                waiting_for = current.tags.get(Registry.LOCK_TOKEN)
                log.info(
                    "waiting for the promotion lock of '%s' (held by %s)",
                    self.model,
                    describe_holder(current.tags),
                )
            time.sleep(self.poll_s * random.uniform(0.5, 1.5))
        self.held = True
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name=self.name)
        self._heartbeat.start()
        self._delete_old_broken_locks()

    def _create(self) -> bool:
        now = str(_now_ms())
        tags = {
            **owner_tags(),
            Registry.LOCK_TOKEN: self.token,
            Registry.LOCK_HOLDER: self.holder[:5000],
            Registry.LOCK_ACQUIRED: now,
            Registry.LOCK_HEARTBEAT: now,
        }
        try:
            retry_transient(
                lambda: self.client.create_registered_model(
                    self.name, tags=tags, description=_description(self.model)
                ),
                what=f"promotion lock of '{self.model}'",
            )
            return True
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: the store saw it exist, then it was released.
            if exc.error_code in (
                "RESOURCE_ALREADY_EXISTS",
                "ALREADY_EXISTS",
                "RESOURCE_DOES_NOT_EXIST",
            ):
                return False
            raise RegistryError(
                f"cannot take the promotion lock of '{self.model}' (registered model "
                f"'{self.name}'): {exc.message}"
            ) from exc

    def _read(self) -> RegisteredModel | None:
        try:
            return retry_transient(
                lambda: self.client.get_registered_model(self.name),
                what=f"promotion lock of '{self.model}'",
            )
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryError(
                f"cannot read the promotion lock of '{self.model}': {exc.message}"
            ) from exc

    def _break(self, current: RegisteredModel, why: str) -> None:
        """Rename the lock of a holder that is gone out of the way (see the module's doc)."""
        token = current.tags.get(Registry.LOCK_TOKEN) or "unknown"
        # The holder may have released it and another process taken it since our read: look
        # again right before the rename, and again after it (there is no conditional rename).
        again = self._read()
        if again is None or again.tags.get(Registry.LOCK_TOKEN) != token:
            return
        broken = f"{self.name}{BROKEN}{token}"
        try:
            self.client.rename_registered_model(self.name, broken)
        except MlflowException as exc:
            # Another waiter broke it first, or the lock changed hands: look again.
            log.debug("could not break the promotion lock of %s: %s", self.model, exc.message)
            return
        try:
            renamed = self.client.get_registered_model(broken)
            if renamed.tags.get(Registry.LOCK_TOKEN) != token:  # a live lock: give it back
                self.client.rename_registered_model(broken, self.name)
                return
        except MlflowException as exc:
            log.debug("could not check the broken lock of %s: %s", self.model, exc.message)
        log.warning(
            "broke the promotion lock of '%s' held by %s: %s",
            self.model,
            describe_holder(current.tags),
            why,
        )

    def _delete_old_broken_locks(self) -> None:
        """Broken locks are kept ``ttl_s`` (see the module's doc), then deleted."""
        try:
            found = self.client.search_registered_models(
                f"name LIKE {quoted(self.name + BROKEN + '%')}"
            )
        except MlflowException:
            return
        for model in found:
            old = _now_ms() - (model.last_updated_timestamp or 0) > self.ttl_s * 1000
            if model.name.startswith(self.name + BROKEN) and old:
                try:
                    self.client.delete_registered_model(model.name)
                except MlflowException:
                    pass  # another holder deleted it

    # ---- holding ---------------------------------------------------------------------------

    def check(self) -> None:
        """Raises RegistryError unless this process still holds the lock (called before every
        write made under it)."""
        current = self._read() if self.held else None
        if current is None or current.tags.get(Registry.LOCK_TOKEN) != self.token:
            self.held = False
            raise RegistryError(
                f"lost the promotion lock of '{self.model}' (its holder was taken for gone "
                f"after {self.ttl_s:.0f} s without a heartbeat): stopped before moving more "
                "aliases; run again"
            )

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                current = self._read()
                if current is None or current.tags.get(Registry.LOCK_TOKEN) != self.token:
                    return
                self.client.set_registered_model_tag(
                    self.name, Registry.LOCK_HEARTBEAT, str(_now_ms())
                )
            except Exception as exc:  # the next beat, or check(), will tell
                log.debug("promotion lock heartbeat of %s failed: %s", self.model, exc)

    def release(self) -> None:
        """Delete the lock if this process still holds it."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if not self.held:
            return
        self.held = False
        current = self._read()
        if current is None or current.tags.get(Registry.LOCK_TOKEN) != self.token:
            return
        try:
            retry_transient(
                lambda: self.client.delete_registered_model(self.name),
                what=f"promotion lock of '{self.model}'",
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(
                    f"cannot release the promotion lock of '{self.model}': {exc.message}"
                ) from exc


def describe_holder(tags: dict[str, str]) -> str:
    """``pipeline run abc (pid 123 on host h, since 2024-05-01 10:00:00 UTC)``."""
    acquired = tags.get(Registry.LOCK_ACQUIRED)
    return (
        f"{tags.get(Registry.LOCK_HOLDER, 'an unknown holder')} (pid {tags.get(Runs.PID, '?')} "
        f"on host {tags.get(Runs.HOST, '?')}, since "
        f"{iso(int(acquired)) if acquired and acquired.isdigit() else '?'})"
    )


def _gone(tags: dict[str, str], ttl_s: float) -> str | None:
    """Why the holder named by a lock's ``tags`` is gone, or None while it may be alive."""
    host, pid = tags.get(Runs.HOST), tags.get(Runs.PID, "")
    if host == socket.gethostname():
        if process_alive(pid, tags.get(Runs.PID_STARTED, "")):
            return None
        return f"process {pid} on this host does not exist any more"
    beat = tags.get(Registry.LOCK_HEARTBEAT, "")
    age_s = (_now_ms() - int(beat)) / 1000 if beat.isdigit() else float("inf")
    if age_s > ttl_s:
        return f"no heartbeat from host {host} for {age_s:.0f} s (more than {ttl_s:.0f} s)"
    return None


def process_alive(pid: str, started: str) -> bool:
    """Is ``pid`` the same process (same start time, as store.tracking.owner_tags writes it)
    and not a zombie?"""
    try:
        process = psutil.Process(int(pid))
        same = f"{process.create_time():.2f}" == started
        return same and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _description(model: str) -> str:
    return (
        f"The promotion lock of registered model `{model}`, held by mlflow-pipeline while it "
        "moves the model's aliases (champion, challenger, rollback); deleted when the move is "
        "done. Its tags name the holder. A lock whose holder died is broken by the next run."
    )
