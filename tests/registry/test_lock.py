"""The promotion lock on a real SQLite registry: one holder at a time across real processes,
waiting with a clear message, breaking the lock of a holder that is gone (and only once), and
a holder that lost its lock stops."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from mlflow.exceptions import MlflowException

from mlflow_pipeline.errors import RegistryError
from mlflow_pipeline.registry.lock import BROKEN, PromotionLock, lock_name
from mlflow_pipeline.tags import Registry, Runs

MODEL = "m"
# Each worker increments a registered-model tag RESULTS times, read-modify-write, under the
# lock, with a pause between the read and the write that loses updates without it.
WORKER = """
import sys, time
from mlflow.tracking import MlflowClient
from mlflow_pipeline.registry.lock import PromotionLock
uri, rounds = sys.argv[1], int(sys.argv[2])
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
for _ in range(rounds):
    with PromotionLock(client, "m", holder="worker", poll_s=0.05):
        count = int(client.get_registered_model("m").tags.get("count", "0"))
        time.sleep(0.05)
        client.set_registered_model_tag("m", "count", str(count + 1))
"""


def names(client) -> set[str]:
    return {m.name for m in client.search_registered_models()}


def fake_lock(client, *, host: str, pid: str, heartbeat_ms: int, token: str = "t1") -> None:
    """A lock left by another holder."""
    client.create_registered_model(
        lock_name(MODEL),
        tags={
            Runs.HOST: host,
            Runs.PID: pid,
            Runs.PID_STARTED: "1.00",
            Registry.LOCK_TOKEN: token,
            Registry.LOCK_HOLDER: "register run r0 of pipeline run p0",
            Registry.LOCK_ACQUIRED: str(heartbeat_ms),
            Registry.LOCK_HEARTBEAT: str(heartbeat_ms),
        },
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_the_lock_is_a_registered_model_while_held(tracking_store):
    client = tracking_store.client()
    with PromotionLock(client, MODEL, holder="pipeline run p1") as lock:
        held = client.get_registered_model(lock_name(MODEL))
        assert held.tags[Registry.LOCK_TOKEN] == lock.token
        assert held.tags[Registry.LOCK_HOLDER] == "pipeline run p1"
        assert held.tags[Runs.HOST] == socket.gethostname()
        assert "promotion lock of registered model `m`" in held.description
        lock.check()
    assert lock_name(MODEL) not in names(client)


def test_one_holder_at_a_time_across_processes(tracking_store):
    client = tracking_store.client()
    client.create_registered_model(MODEL)
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, tracking_store.uri, "5"]) for _ in range(3)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0]
    assert client.get_registered_model(MODEL).tags["count"] == "15"  # no update lost
    assert lock_name(MODEL) not in names(client)


def test_a_waiter_gives_up_naming_the_holder(tracking_store):
    client = tracking_store.client()
    with PromotionLock(client, MODEL, holder="register run r1 of pipeline run p1"):
        waiter = PromotionLock(client, MODEL, holder="other", timeout_s=0.5, poll_s=0.05)
        with pytest.raises(
            RegistryError,
            match=r"waited 0 s for the promotion lock of 'm', held by register run r1 of "
            r"pipeline run p1 \(pid \d+ on host .+\); if that process is gone for good, "
            r"delete the registered model 'm.promotion-lock'",
        ):
            waiter.acquire()


def test_the_lock_of_a_dead_process_is_broken_once(tracking_store):
    client = tracking_store.client()
    fake_lock(client, host=socket.gethostname(), pid="999999999", heartbeat_ms=now_ms())
    with PromotionLock(client, MODEL, holder="next", timeout_s=5) as lock:
        assert client.get_registered_model(lock_name(MODEL)).tags[Registry.LOCK_TOKEN] == (
            lock.token
        )
        # Kept a while: a second waiter that saw the same dead holder cannot break ours.
        assert f"{lock_name(MODEL)}{BROKEN}t1" in names(client)
        with pytest.raises(MlflowException, match="already exists"):
            client.rename_registered_model(lock_name(MODEL), f"{lock_name(MODEL)}{BROKEN}t1")
    assert lock_name(MODEL) not in names(client)


def test_another_hosts_lock_is_broken_after_its_heartbeat_stops(tracking_store):
    client = tracking_store.client()
    fake_lock(client, host="elsewhere", pid="1", heartbeat_ms=now_ms())
    waiter = PromotionLock(client, MODEL, holder="next", timeout_s=0.3, ttl_s=60, poll_s=0.05)
    with pytest.raises(RegistryError, match=r"held by .* on host elsewhere"):
        waiter.acquire()  # a fresh heartbeat: alive
    client.set_registered_model_tag(
        lock_name(MODEL), Registry.LOCK_HEARTBEAT, str(now_ms() - 61_000)
    )
    with PromotionLock(client, MODEL, holder="next", timeout_s=5, ttl_s=60):
        pass


def test_broken_locks_are_deleted_after_the_ttl(tracking_store):
    client = tracking_store.client()
    fake_lock(client, host=socket.gethostname(), pid="999999999", heartbeat_ms=now_ms())
    # A dead process's lock is broken whatever the TTL; a long one keeps the broken lock
    # through this acquire's own clean-up, however slow the store is.
    with PromotionLock(client, MODEL, holder="first", ttl_s=60):
        pass
    assert f"{lock_name(MODEL)}{BROKEN}t1" in names(client)
    time.sleep(0.3)
    with PromotionLock(client, MODEL, holder="second", ttl_s=0.2):
        pass
    assert names(client) == set()


def test_a_holder_that_lost_its_lock_stops(tracking_store):
    client = tracking_store.client()
    with PromotionLock(client, MODEL, holder="slow") as lock:
        # Taken for gone and broken while paused; another process holds it now.
        client.rename_registered_model(lock_name(MODEL), f"{lock_name(MODEL)}{BROKEN}x")
        fake_lock(client, host="elsewhere", pid="1", heartbeat_ms=now_ms(), token="t2")
        with pytest.raises(RegistryError, match="lost the promotion lock of 'm'"):
            lock.check()
    # Not ours: left alone on release.
    assert client.get_registered_model(lock_name(MODEL)).tags[Registry.LOCK_TOKEN] == "t2"


def test_the_holder_renews_its_heartbeat(tracking_store):
    client = tracking_store.client()

    def heartbeat() -> int:
        return int(client.get_registered_model(lock_name(MODEL)).tags[Registry.LOCK_HEARTBEAT])

    with PromotionLock(client, MODEL, holder="h", ttl_s=0.4):
        first = later = heartbeat()
        # Renewed within a fraction of the TTL on a quiet machine; a loaded one (CI, once)
        # may take longer: what counts is that it is renewed, not when.
        deadline = time.monotonic() + 10
        while later == first and time.monotonic() < deadline:
            time.sleep(0.05)
            later = heartbeat()
    assert later > first
