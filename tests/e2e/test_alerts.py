"""Alerts from the real CLI: a loopback webhook and a command hook hear about a pipeline run that
fails on bad data (stage, error, run link) and about drift; failing hooks change nothing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.engine.test_alerts import webhook_server

from .helpers import (
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    Store,
    assert_clean_failure,
    assert_ok,
    write_classification_csv,
)

pytestmark = pytest.mark.slow

BAD_DATA = (
    "data=csv",
    "data.target=label",
    "data.task=classification",
    "model=logistic_regression",
)


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("MLFLOW_PIPELINE_ALERT_WEBHOOK", raising=False)


def shifted(path: Path) -> Path:
    """A day whose income moved by one standard deviation and whose plan mix changed."""
    write_classification_csv(path, seed=7)
    df = pd.read_csv(path)
    df["income"] += 15.0
    df.loc[df.index[:150], "plan"] = "premium"
    df.to_csv(path, index=False)
    return path


def env_dumping_hook(folder: Path) -> tuple[Path, Path]:
    """An executable hook that writes its MLFLOW_PIPELINE_ALERT_* variables to a file."""
    hook, out = folder / "hook.sh", folder / "alert.env"
    hook.write_text(f"#!/bin/sh\nenv | grep '^MLFLOW_PIPELINE_ALERT_' > '{out}'\n")
    hook.chmod(0o755)
    return hook, out


def read_env(path: Path) -> dict[str, str]:
    """``KEY=value`` lines (JSON and multi-line values left out)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if k.startswith("MLFLOW_PIPELINE_ALERT_")}


def only_pipeline_run(store: Store, experiment: str):
    experiment_id = store.client.get_experiment_by_name(experiment).experiment_id
    [run] = store.client.search_runs([experiment_id], "tags.`pipeline.kind` = 'pipeline'")
    return run


def test_hooks_hear_of_a_run_that_fails_on_bad_data(store: Store):
    data = write_classification_csv(store.root / "customers.csv", null_target_rows=3)
    hook, env_file = env_dumping_hook(store.root)
    with webhook_server() as server:
        result = store.pipeline(
            *BAD_DATA,
            f"data.path={data}",
            f"alerts.webhook={server.url}",
            f"alerts.command={hook}",
        )
    assert_clean_failure(result, "[validate] dataset 'raw' failed validation", "not_nullable")
    assert result.returncode == 1
    assert result.stderr.count("mlflow-pipeline: error:") == 1
    run = only_pipeline_run(store, "customers")
    assert run.info.status == "FAILED"
    link = f"{store.uri}#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    [received] = server.received
    assert server.paths == ["/hook"]
    payload = received["json"]
    assert payload["kind"] == "failure"
    assert payload["stage"] == "validate"
    assert "dataset 'raw' failed validation" in payload["error"]
    assert "column 'label', check not_nullable: 3 row(s)" in payload["error"]
    assert payload["pipeline_run_id"] == run.info.run_id
    assert payload["experiment_id"] == run.info.experiment_id
    assert payload["model_name"] == "customers"
    assert payload["tracking_uri"] == store.uri
    assert payload["run_link"] == link
    assert payload["run_url"] is None  # not a tracking server
    assert payload["details"] == {"error_type": "DataValidationError"}

    env = read_env(env_file)
    assert env["MLFLOW_PIPELINE_ALERT_KIND"] == "failure"
    assert env["MLFLOW_PIPELINE_ALERT_STAGE"] == "validate"
    assert env["MLFLOW_PIPELINE_ALERT_RUN_ID"] == run.info.run_id
    assert env["MLFLOW_PIPELINE_ALERT_RUN_LINK"] == link
    assert env["MLFLOW_PIPELINE_ALERT_MODEL"] == "customers"
    assert env["MLFLOW_PIPELINE_ALERT_TEXT"].startswith(
        "mlflow-pipeline failure at stage validate (model customers): "
        "[validate] dataset 'raw' failed validation"
    )


def test_failing_hooks_keep_the_error_and_the_exit_code(store: Store):
    data = write_classification_csv(store.root / "customers.csv", null_target_rows=3)
    with webhook_server(status=500) as server:
        result = store.pipeline(
            *BAD_DATA,
            f"data.path={data}",
            f"alerts.webhook={server.url}",
            "alerts.command='echo hook broken >&2; exit 3'",
        )
    assert len(server.received) == 1
    assert_clean_failure(result, "[validate] dataset 'raw' failed validation")
    assert result.returncode == 1
    logged = result.stdout + result.stderr
    assert "alert command failed: command exited 3: hook broken" in logged
    assert "alert webhook failed: POST 127.0.0.1" in logged
    assert "HTTP 500" in logged
    assert only_pipeline_run(store, "customers").info.status == "FAILED"


def test_drift_alerts_once_with_the_flagged_run(champion_store: Store):
    data = shifted(champion_store.root / "shifted" / "customers.csv")
    with webhook_server() as server:
        result = champion_store.pipeline(
            *CHAMPION_OVERRIDES,
            "tracking.experiment_name=drifted",
            f"data.path={data}",
            f"alerts.webhook={server.url}",
        )
    assert_ok(result)
    run = only_pipeline_run(champion_store, "drifted")
    assert run.data.tags["pipeline.drift"] == "detected"
    [received] = server.received  # drift only: the run itself succeeded
    payload = received["json"]
    assert payload["kind"] == "drift"
    assert payload["stage"] == "profile"
    assert payload["error"].startswith(f"drift detected against {CHAMPION_MODEL} v1 (@champion)")
    assert set(payload["details"]["drifted"]) == {"income", "plan"}
    assert payload["details"]["policy"] == "warn"
    assert payload["pipeline_run_id"] == run.info.run_id
    fragment = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    assert payload["run_link"] == champion_store.uri + fragment
