"""`mlflow-pipeline promote` and `mlflow-pipeline audit`, as a user runs them, on a real store.

The registry UI's own moves (found by the next run) are tested in a real browser in
test_ui_promotion.py.
"""

from __future__ import annotations

import pytest

from mlflow_pipeline.registry.audit import current_user

from .helpers import (
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    VENV_BIN,
    Store,
    assert_clean_failure,
    assert_ok,
)

pytestmark = pytest.mark.slow

CLI = VENV_BIN / "mlflow-pipeline"


@pytest.fixture
def two_versions(champion_store: Store, tmp_path) -> Store:
    """v1 champion (the template's run), v2 a weaker challenger from a second run."""
    assert_ok(
        champion_store.pipeline(
            *CHAMPION_OVERRIDES,
            f"data.path={tmp_path / 'customers.csv'}",
            "tracking.experiment_name=second",
            "model.C=0.0001",
            "cache.policy=recompute",
        )
    )
    assert champion_store.alias(CHAMPION_MODEL, "challenger") == "2"
    assert champion_store.alias(CHAMPION_MODEL, "champion") == "1"
    return champion_store


def test_audit_prints_every_move_of_the_pipeline(two_versions: Store) -> None:
    result = two_versions.run(CLI, "audit", CHAMPION_MODEL)
    assert_ok(result)
    rows = result.stdout.splitlines()
    assert rows[0].split()[:3] == ["when", "(UTC)", "alias"]
    moves = [row.split()[2:6] for row in rows[1:-1]]
    assert moves == [
        ["challenger", "none", "v1", "pipeline"],
        ["champion", "none", "v1", "pipeline"],
        ["challenger", "v1", "v2", "pipeline"],
    ]
    assert "no champion yet" in rows[2]
    assert "not promoted: challenger roc_auc=" in rows[3]
    assert rows[-1] == "now: champion v1, challenger v2, rollback none"


def test_promote_by_hand_is_audited(two_versions: Store) -> None:
    store = two_versions
    result = store.run(
        CLI, "promote", f"models:/{CHAMPION_MODEL}@challenger", "--reason", "Q4 sign-off"
    )
    assert_ok(result)
    assert result.stdout.splitlines() == [
        f"recorded cli move of {CHAMPION_MODEL} champion: v1 -> v2: Q4 sign-off "
        f"(as models:/{CHAMPION_MODEL}@challenger)",
        f"recorded cli move of {CHAMPION_MODEL} rollback: none -> v1: the champion before v2: "
        "Q4 sign-off",
    ]
    assert store.alias(CHAMPION_MODEL, "champion") == "2"
    assert store.alias(CHAMPION_MODEL, "rollback") == "1"
    trail = store.run(CLI, "audit", CHAMPION_MODEL, "--alias", "champion")
    assert_ok(trail)
    last = trail.stdout.splitlines()[-2]
    assert last.split()[2:7] == ["champion", "v1", "v2", "cli", current_user()]
    # Promoting it again moves nothing and says so.
    again = store.run(CLI, "promote", f"models:/{CHAMPION_MODEL}/2", "--reason", "again")
    assert_ok(again)
    assert (
        again.stdout.strip() == f"champion is already on models:/{CHAMPION_MODEL}/2: nothing moved"
    )


def test_promote_refuses_an_unknown_version_and_a_missing_reason(two_versions: Store) -> None:
    store = two_versions
    unknown = store.run(CLI, "promote", f"models:/{CHAMPION_MODEL}/7", "--reason", "x")
    assert_clean_failure(unknown, f"models:/{CHAMPION_MODEL}/7: no such model version")
    blank = store.run(CLI, "promote", f"models:/{CHAMPION_MODEL}/2", "--reason", " ")
    assert_clean_failure(blank, "promote needs --reason")
    missing = store.run(CLI, "promote", f"models:/{CHAMPION_MODEL}/2")
    assert missing.returncode == 2
    assert "--reason" in missing.stderr
    assert store.alias(CHAMPION_MODEL, "champion") == "1"
    nope = store.run(CLI, "audit", "nope")
    assert_clean_failure(nope, "no registered model 'nope'")
