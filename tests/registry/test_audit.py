"""The audit trail on a real SQLite store: records, reading back, moves found outside."""

from __future__ import annotations

import os
import socket
import time

import pytest

from mlflow_pipeline.errors import ConfigError, RegistryError
from mlflow_pipeline.registry import audit
from mlflow_pipeline.registry.audit import AuditTrail, Move, Why
from mlflow_pipeline.tags import Audit

MODEL = "churn"
WHY = Why(
    kind=audit.KIND_PIPELINE,
    actor="mlflow-pipeline register stage",
    user="ana",
    reason="challenger beats champion",
    pipeline_run="p1",
    stage_run="s1",
    metric="roc_auc",
    challenger_score=0.91,
    champion_score=0.89,
)


@pytest.fixture
def trail(tracking_store) -> AuditTrail:
    return AuditTrail(tracking_store.client(), MODEL, f"{MODEL}-audit")


def register_model(client) -> None:
    """The registered model (records tag it with their experiment)."""
    client.create_registered_model(MODEL)


def test_no_experiment_means_no_moves_and_nothing_created(trail, tracking_store):
    assert trail.moves() == []
    assert trail.last("champion") is None
    assert tracking_store.client().get_experiment_by_name(f"{MODEL}-audit") is None


def test_a_record_reads_back_whole(trail, tracking_store):
    client = tracking_store.client()
    register_model(client)
    recorded = trail.record(Move.of(MODEL, "champion", "1", "2", WHY))
    (read,) = trail.moves()
    assert read == recorded
    assert (read.alias, read.from_version, read.to_version) == ("champion", "1", "2")
    assert (read.user, read.pipeline_run, read.stage_run, read.metric) == (
        "ana",
        "p1",
        "s1",
        "roc_auc",
    )
    assert (read.challenger_score, read.champion_score) == (0.91, 0.89)
    assert read.host
    assert read.time_ms > 0
    run = client.get_run(read.run_id)
    # The UI's run table shows who (User), what moved (Run Name) and the scores.
    assert run.info.run_name == "champion: v1 -> v2"
    assert run.info.user_id == "ana"
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"challenger_score": 0.91, "champion_score": 0.89}
    assert client.get_registered_model(MODEL).tags[Audit.MODEL_EXPERIMENT] == f"{MODEL}-audit"


def test_moves_keep_their_order_and_filter_by_alias_and_model(trail, tracking_store):
    client = tracking_store.client()
    register_model(client)
    client.create_registered_model("other")
    other = AuditTrail(client, "other", f"{MODEL}-audit")  # one experiment, two models
    trail.record(Move.of(MODEL, "challenger", None, "1", WHY))
    trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    other.record(Move.of("other", "champion", None, "7", WHY))
    trail.record(Move.of(MODEL, "challenger", "1", "2", WHY))
    assert [(m.alias, m.to_version) for m in trail.moves()] == [
        ("challenger", "1"),
        ("champion", "1"),
        ("challenger", "2"),
    ]
    assert [m.to_version for m in trail.moves("challenger")] == ["1", "2"]
    assert trail.last("challenger").to_version == "2"
    assert [m.to_version for m in other.moves()] == ["7"]


def test_unrecorded_finds_moves_made_outside(trail, tracking_store):
    register_model(tracking_store.client())
    first = trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    assert trail.unrecorded({"champion": "1"}) == []
    (moved,) = trail.unrecorded({"champion": "3"})
    assert (moved.from_version, moved.to_version, moved.kind) == ("1", "3", "external")
    assert moved.user == "unknown"
    assert moved.moved_after_ms == first.time_ms
    assert "moved outside mlflow-pipeline from v1 to v3 after" in moved.reason
    (removed,) = trail.unrecorded({"champion": None})
    assert removed.to_version is None
    assert "removed outside mlflow-pipeline" in removed.reason
    (never,) = trail.unrecorded({"rollback": "2"})
    assert never.from_version is None
    assert "no earlier record" in never.reason
    assert trail.unrecorded({"challenger": None}) == []  # never set, never recorded


def test_reconcile_records_once(trail, tracking_store):
    register_model(tracking_store.client())
    trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    (found,) = trail.reconcile({"champion": "2"}, detected_by="run-9")
    assert found.run_id
    assert found.pipeline_run == "run-9"
    assert trail.reconcile({"champion": "2"}) == []
    assert [(m.kind, m.to_version) for m in trail.moves()] == [("pipeline", "1"), ("external", "2")]


def test_a_deleted_audit_experiment_is_a_clear_error(trail, tracking_store):
    client = tracking_store.client()
    register_model(client)
    trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    client.delete_experiment(trail.experiment_id(create=False))
    with pytest.raises(RegistryError, match=r"audit experiment 'churn-audit' .* is deleted"):
        AuditTrail(client, MODEL, f"{MODEL}-audit").record(Move.of(MODEL, "x", None, "1", WHY))


def test_describe_lists_moves_now_and_pending(trail, tracking_store):
    register_model(tracking_store.client())
    trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    pending = trail.unrecorded({"champion": "2"})
    text = audit.describe(trail.moves(), {"champion": "2", "rollback": None}, pending)
    header, row, now, not_yet = text.splitlines()
    assert header.split()[:3] == ["when", "(UTC)", "alias"]
    assert "champion  none  v1  pipeline  ana" in row
    assert "roc_auc 0.9100 vs 0.8900" in row
    assert row.endswith("challenger beats champion")
    assert now == "now: champion v2, rollback none"
    assert not_yet.startswith("not recorded yet: champion: v1 -> v2: moved outside")
    assert "(no recorded moves)" in audit.describe([], {"champion": None})


def test_a_model_name_with_a_quote_is_found(tracking_store):
    client = tracking_store.client()
    client.create_registered_model("o'brien")
    trail = AuditTrail(client, "o'brien", "o'brien-audit")
    trail.record(Move.of("o'brien", "champion", None, "1", WHY))
    assert [m.to_version for m in trail.moves()] == ["1"]
    assert trail.unrecorded({"champion": "1"}) == []
    assert audit.quoted("o'brien") == '"o\'brien"'
    with pytest.raises(ConfigError, match="both quote characters"):
        audit.quoted("""a'b"c""")


def test_a_record_comes_after_the_alias_newest_even_with_a_clock_behind(trail, tracking_store):
    """Another process (or host) whose clock is behind still appends after the last record."""
    register_model(tracking_store.client())
    first = trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    behind = time.time_ns() - 3_600 * 10**9
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(AuditTrail, "_last_ms", 0)
        mp.setattr(audit.time, "time_ns", lambda: behind)
        second = AuditTrail(trail.client, MODEL, trail.experiment).record(
            Move.of(MODEL, "champion", "1", "2", WHY)
        )
    assert second.time_ms == first.time_ms + 1
    assert trail.last("champion").to_version == "2"
    assert trail.unrecorded({"champion": "2"}) == []


def test_the_experiment_is_found_by_the_id_the_model_recorded(trail, tracking_store):
    client = tracking_store.client()
    register_model(client)
    trail.record(Move.of(MODEL, "champion", None, "1", WHY))
    experiment_id = trail.experiment_id(create=False)
    client.rename_experiment(experiment_id, "renamed")
    by_id = AuditTrail(client, MODEL, f"{MODEL}-audit", experiment_id=experiment_id)
    assert [m.to_version for m in by_id.moves()] == ["1"]
    assert by_id.experiment == "renamed"
    with pytest.raises(RegistryError, match=r"audit experiment of model 'churn' \(id 999"):
        AuditTrail(client, MODEL, "x", experiment_id="999").moves()


def test_a_record_names_its_writer_and_a_half_written_one_is_no_record(trail, tracking_store):
    client = tracking_store.client()
    register_model(client)
    recorded = trail.record(Move.of(MODEL, "champion", "1", "2", WHY))
    tags = client.get_run(recorded.run_id).data.tags
    assert tags["pipeline.host"] == socket.gethostname()
    assert tags["pipeline.pid"] == str(os.getpid())
    # A writer killed after creating its run: RUNNING, owned by a process that is gone.
    experiment_id = trail.experiment_id(create=False)
    half = client.create_run(
        experiment_id,
        tags={
            Audit.MODEL: MODEL,
            Audit.ALIAS: "champion",
            Audit.FROM: "2",
            Audit.TO: "3",
            "pipeline.host": socket.gethostname(),
            "pipeline.pid": "999999999",
            "pipeline.pid_started": "1.00",
        },
    )
    assert [m.to_version for m in trail.moves()] == ["2"]  # only finished runs are records
    assert trail.last("champion").to_version == "2"
    assert trail.reap() == [half.info.run_id]
    run = client.get_run(half.info.run_id)
    assert run.info.status == "FAILED"
    assert "ended while this run was RUNNING" in run.data.tags["pipeline.error"]
    assert client.get_run(recorded.run_id).info.status == "FINISHED"
