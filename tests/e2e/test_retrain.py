"""``mlflow-pipeline simulate``: days of retraining through the real CLI, read back from the
printed table, the table file and the MLflow registry."""

from __future__ import annotations

import re

import pytest

from mlflow_pipeline.config import METRICS
from mlflow_pipeline.tags import Runs
from tests.helpers import read_table

from .helpers import VENV_BIN, Store, assert_ok, write_classification_csv

pytestmark = pytest.mark.slow

MODEL = "customers"
TABLE_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s")


def simulate(store: Store, *args: str):
    return store.run(
        VENV_BIN / "mlflow-pipeline",
        "simulate",
        "--data",
        f"{MODEL}.csv",
        "--target",
        "label",
        "--task",
        "classification",
        "--workdir",
        "sim",
        *args,
        "model=logistic_regression",
    )


def printed_rows(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if TABLE_ROW.match(line)]


def test_five_days_with_a_shift_on_day_four(store: Store):
    write_classification_csv(store.root / f"{MODEL}.csv", rows=1500)

    result = simulate(store, "--days", "5", "--shift-day", "4")

    assert_ok(result)
    rows = printed_rows(result.stdout)
    assert [TABLE_ROW.match(r).group(1) for r in rows] == ["1", "2", "3", "4", "5"], result.stdout
    days = read_table(store.root / "sim" / "simulation.csv")
    assert [d.day for d in days] == [1, 2, 3, 4, 5]
    assert [d.rows for d in days] == [300, 600, 900, 900, 900]  # a batch and 2 days before it
    for day, row in zip(days, rows, strict=True):
        assert row.rstrip().endswith(day.decision), (row, day)
    assert not any(d.failed for d in days), result.stdout

    # Day 1: nothing to compare with.
    assert days[0].decision == "promoted (no champion yet)"
    assert days[0].drift == "not checked"
    # Drift on the shifted days, on the shifted column, and on no other day. Day 4's challenger
    # scores higher than the champion but not beyond the noise of the comparison (a paired
    # bootstrap on 180 test rows), so v1 stays champion and day 5 is compared with its
    # training data too.
    assert [d.shifted for d in days] == [False, False, False, True, True]
    assert days[3].drift == days[4].drift == "yes", result.stdout
    assert days[3].drifted == days[4].drifted == ("income",)
    assert [d.drift for d in days[1:3]] == ["no", "no"], result.stdout
    assert days[3].challenger_score > days[3].champion_score, result.stdout
    assert days[3].decision == "kept v1", result.stdout
    assert "drift yes: income" in result.stderr

    # The registry: one version a day, promotions only of better challengers.
    versions = store.versions(MODEL)
    assert [str(v.version) for v in versions] == [d.version for d in days]
    promoted = [v for v in versions if v.tags["promotion.decision"] == "promoted"]
    assert [str(v.version) for v in promoted] == [
        d.version for d in days if d.decision.startswith("promoted")
    ]
    assert promoted[0].tags["promotion.champion_version"] == "None"
    for version in promoted[1:]:
        tags = version.tags
        metric = tags["promotion.metric"]
        challenger = float(tags["promotion.challenger_score"])
        champion = float(tags["promotion.champion_score"])
        if METRICS["classification"][metric]:  # greater is better
            assert challenger > champion, (version.version, tags)
        else:
            assert challenger < champion, (version.version, tags)
    for day, version in zip(days, versions, strict=True):
        assert day.challenger_score == float(version.tags["promotion.challenger_score"])
    assert store.alias(MODEL, "champion") == days[-1].champion_after
    assert f"champion after day 5: v{days[-1].champion_after}" in result.stdout

    # Each day is one pipeline run; the shifted day's is flagged in the store too.
    runs = {r.info.run_id: r for r in store.runs_of_kind("pipeline")}
    assert set(runs) == {d.pipeline_run_id for d in days}
    flagged = runs[days[3].pipeline_run_id].data.tags
    assert flagged["pipeline.drift"] == "detected"
    assert flagged["pipeline.drift.features"] == "income"
    assert all(r.data.tags[Runs.KIND] == "pipeline" for r in runs.values())


def test_a_failed_day_is_recorded_and_the_next_day_runs(store: Store):
    """With the drift policy at fail, the shifted days fail at profile: nothing registered,
    so day 3 is still checked against v1, and fails too."""
    write_classification_csv(store.root / f"{MODEL}.csv", rows=900)

    result = simulate(store, "--days", "3", "--shift-day", "2", "validation.drift.policy=fail")

    assert_ok(result)
    assert len(printed_rows(result.stdout)) == 3, result.stdout
    days = read_table(store.root / "sim" / "simulation.csv")
    assert days[0].decision == "promoted (no champion yet)"
    for day in days[1:]:
        assert day.failed
        assert day.decision.startswith(
            f"failed: [profile] drift detected against {MODEL} v1 (@champion)"
        ), day.decision
        assert day.drift == "yes"
        assert day.drifted == ("income",)
        assert day.version is None
        assert day.champion_after == "1"
    assert store.version_numbers(MODEL) == ["1"]
    assert store.alias(MODEL, "champion") == "1"
    assert "3 day(s), 2 failed; champion after day 3: v1" in result.stdout
    failed_runs = [r for r in store.runs_of_kind("pipeline") if r.info.status == "FAILED"]
    assert {r.info.run_id for r in failed_runs} == {d.pipeline_run_id for d in days[1:]}
