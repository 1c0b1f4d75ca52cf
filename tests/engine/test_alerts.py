"""Failure and drift alerts: the payload and run link, a real command hook and a real webhook
on loopback, hooks that fail or hang (never raising), and the runner noting the failed run."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from mlflow_pipeline.config import AlertsConfig, hydra_quote
from mlflow_pipeline.engine import alerts
from mlflow_pipeline.engine.alerts import (
    Alert,
    alert_drift,
    alert_failure,
    make_alert,
    run_link,
    send,
)
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import ConfigError, DataValidationError, DriftError
from mlflow_pipeline.tags import Env
from tests.helpers import csv_overrides, mixed_frame

DRIFT = {
    "checked": True,
    "detected": True,
    "n_drifted": 1,
    "n_features": 3,
    "drifted": ["income"],
    "features": {"income": {"detail": "PSI 0.835 >= 0.2"}},
    "schema": {"missing": [], "extra": [], "kind_changed": []},
    "reference": {"model": "customers", "version": "1", "alias": "champion"},
}


class WebhookServer:
    """A real HTTP server on 127.0.0.1 that records every POST and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[dict] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.paths.append(self.path)
                outer.received.append(
                    {"content_type": self.headers["Content-Type"], "json": json.loads(body)}
                )
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def __enter__(self) -> WebhookServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def webhook_server(status: int = 200) -> Iterator[WebhookServer]:
    with WebhookServer(status) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv(Env.ALERT_WEBHOOK, raising=False)


def env_dump_command(path: Path) -> str:
    """A hook that writes its MLFLOW_PIPELINE_ALERT_* variables to ``path`` as JSON."""
    return (
        "python3 -c 'import json, os; json.dump({k: v for k, v in os.environ.items() "
        f'if k.startswith("MLFLOW_PIPELINE_ALERT_")}}, open("{path}", "w"))\''
    )


def dump_env_to(path: Path) -> str:
    """The override that makes ``env_dump_command(path)`` the command hook."""
    return f"alerts.command={hydra_quote(env_dump_command(path))}"


# ---- the alert itself ----------------------------------------------------------------------


def test_run_link_over_any_store_and_the_ui_url_over_a_server():
    assert run_link("sqlite:////x/mlflow.db", "3", "abc") == (
        "sqlite:////x/mlflow.db#/experiments/3/runs/abc",
        None,
    )
    url = "http://mlflow.example:5000/#/experiments/3/runs/abc"
    assert run_link("http://mlflow.example:5000", "3", "abc") == (url, url)
    assert run_link("http://mlflow.example:5000/", "3", "abc") == (url, url)
    assert run_link("sqlite:////x/mlflow.db", None, None) == (None, None)


def test_failure_payload(make_config, tracking_store):
    cfg = make_config("tracking.uri=https://mlflow.example", "registry.model_name=churn")
    alert = make_alert(
        cfg,
        kind="failure",
        stage="validate",
        error="[validate] dataset 'raw' failed validation: 1 check(s)\n  - column 'label'",
        pipeline_run_id="r1",
        experiment_id="7",
    )
    payload = json.loads(json.dumps(alert.payload()))  # JSON all the way
    assert payload["kind"] == "failure"
    assert payload["stage"] == "validate"
    assert payload["model_name"] == "churn"
    assert payload["pipeline_run_id"] == "r1"
    assert payload["experiment_id"] == "7"
    assert payload["tracking_uri"] == "https://mlflow.example"
    assert payload["run_url"] == "https://mlflow.example/#/experiments/7/runs/r1"
    assert payload["run_link"] == payload["run_url"]
    assert payload["error"].startswith("[validate] dataset 'raw' failed validation")
    assert payload["text"] == (
        "mlflow-pipeline failure at stage validate (model churn): "
        "[validate] dataset 'raw' failed validation: 1 check(s) "
        "https://mlflow.example/#/experiments/7/runs/r1"
    )
    assert {"host", "time", "details"} <= set(payload)


def test_an_alert_says_no_secret(make_config):
    """The tracking server's password and any secret of the config are not in the alert,
    neither in its fields nor in the error it quotes."""
    cfg = make_config(
        "tracking.uri=https://ann:pa55-word@mlflow.example",
        "+data.api_token=tok-123456",
        "alerts.webhook='https://hooks.example/T000/B000/xyzxyzxyzxyzxyz'",
    )
    alert = make_alert(
        cfg,
        kind="failure",
        stage="ingest",
        error="GET https://ann:pa55-word@mlflow.example failed with token tok-123456",
        pipeline_run_id="r1",
        experiment_id="7",
    )
    text = json.dumps(alert.payload()) + json.dumps(alert.environment())
    for secret in ("pa55-word", "tok-123456", "xyzxyzxyzxyzxyz"):
        assert secret not in text
    assert alert.tracking_uri == "https://ann:***@mlflow.example"


def test_a_command_hook_gets_the_alert_in_its_environment(tmp_path, make_config, tracking_store):
    out = tmp_path / "alert.json"
    cfg = make_config(dump_env_to(out))
    exc = DataValidationError(
        "dataset 'raw' failed", stage="validate", dataset="raw", failure_cases=None
    )
    outcomes = alert_failure(cfg, exc, pipeline_run_id="r9", experiment_id="2")
    assert outcomes == ["sent command: exit 0"]
    env = json.loads(out.read_text())
    assert env["MLFLOW_PIPELINE_ALERT_KIND"] == "failure"
    assert env["MLFLOW_PIPELINE_ALERT_STAGE"] == "validate"
    assert env["MLFLOW_PIPELINE_ALERT_ERROR"] == "[validate] dataset 'raw' failed"
    assert env["MLFLOW_PIPELINE_ALERT_MODEL"] == "breast_cancer"
    assert env["MLFLOW_PIPELINE_ALERT_RUN_ID"] == "r9"
    assert env["MLFLOW_PIPELINE_ALERT_EXPERIMENT_ID"] == "2"
    assert env["MLFLOW_PIPELINE_ALERT_TRACKING_URI"] == tracking_store.uri
    assert env["MLFLOW_PIPELINE_ALERT_RUN_LINK"] == f"{tracking_store.uri}#/experiments/2/runs/r9"
    assert env["MLFLOW_PIPELINE_ALERT_RUN_URL"] == ""
    assert json.loads(env["MLFLOW_PIPELINE_ALERT_JSON"])["details"] == {
        "error_type": "DataValidationError"
    }


def test_a_webhook_receives_the_alert_as_json(make_config):
    with webhook_server() as server:
        cfg = make_config(f"alerts.webhook={server.url}")
        outcomes = alert_failure(cfg, ConfigError("bad value"))
    assert outcomes == [f"sent webhook: POST 127.0.0.1:{server.server.server_port}: HTTP 200"]
    [received] = server.received
    assert received["content_type"] == "application/json"
    assert received["json"]["kind"] == "failure"
    assert received["json"]["error"] == "bad value"
    assert received["json"]["run_link"] is None  # no pipeline run to link to


def test_the_webhook_can_come_from_the_environment(monkeypatch):
    with webhook_server() as server:
        monkeypatch.setenv(Env.ALERT_WEBHOOK, server.url)
        send(AlertsConfig(), Alert(kind="failure", stage="train", error="boom"))
    assert [r["json"]["stage"] for r in server.received] == ["train"]


def test_kinds_choose_what_alerts():
    with webhook_server() as server:
        settings = AlertsConfig(webhook=server.url, kinds=["failure"])
        assert send(settings, Alert(kind="drift", stage="profile", error="drift")) == []
        assert len(send(settings, Alert(kind="failure", stage="train", error="x"))) == 1
    assert [r["json"]["kind"] for r in server.received] == ["failure"]


# ---- hooks that fail never raise -----------------------------------------------------------


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    with webhook_server() as server:
        url = server.url
    yield url  # the server is gone: connection refused


@contextlib.contextmanager
def silent_url() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"


FAILING_HOOKS = {
    "command-exit": (lambda: contextlib.nullcontext(""), {"command": "echo oops >&2; exit 3"}),
    "command-timeout": (lambda: contextlib.nullcontext(""), {"command": "sleep 30"}),
    "webhook-refused": (refused_url, {}),
    "webhook-timeout": (silent_url, {}),
}
EXPECTED_OUTCOME = {
    "command-exit": "command exited 3: oops",
    "command-timeout": "command timed out after 0.5 s and was killed",
    "webhook-refused": "Connection refused",
    "webhook-timeout": "timed out",
}
# The hooks that are meant to time out get 0.5 s; the others a time a loaded machine never
# exceeds (forking a shell from a large test process can take longer than 0.5 s).
TIMEOUT_S = {"command-timeout": 0.5, "webhook-timeout": 0.5}


@pytest.mark.parametrize("hook", FAILING_HOOKS)
def test_a_failing_hook_logs_a_warning_and_never_raises(hook, caplog):
    make_url, settings = FAILING_HOOKS[hook]
    with make_url() as url, caplog.at_level(logging.WARNING, "mlflow_pipeline"):
        config = AlertsConfig(webhook=url or None, timeout_s=TIMEOUT_S.get(hook, 30), **settings)
        start = time.monotonic()
        [result] = send(config, Alert(kind="failure", stage="train", error="boom"))
        elapsed = time.monotonic() - start
    assert result.startswith("failed ")
    assert EXPECTED_OUTCOME[hook] in result
    assert EXPECTED_OUTCOME[hook] in caplog.text
    assert elapsed < 20  # a timed-out hook is not waited for (the command is killed)


def test_a_webhook_answering_500_is_a_failed_hook(caplog):
    with webhook_server(status=500) as server, caplog.at_level(logging.WARNING):
        [result] = send(AlertsConfig(webhook=server.url), Alert("failure", "train", "boom"))
    assert result.endswith("HTTP 500 Internal Server Error")
    assert "alert webhook failed" in caplog.text


def test_a_timed_out_command_takes_its_children_with_it(tmp_path):
    """The hook's whole process group is killed: nothing it started writes afterwards."""
    late = tmp_path / "late"
    command = f"(sleep 1.5; touch {late}) & sleep 30"
    send(AlertsConfig(command=command, timeout_s=0.5), Alert("failure", "train", "boom"))
    time.sleep(2)
    assert not late.exists()


def test_a_broken_alerts_config_does_not_hide_the_error(caplog):
    """The CLI alerts with whatever config there is, even one that failed its checks."""
    broken = OmegaConf.create({"alerts": {"command": "true", "timeout_s": "soon"}})
    with caplog.at_level(logging.WARNING):
        [outcome] = alert_failure(broken, ConfigError("alerts.timeout_s: bad"))
    assert outcome.startswith("failed alert: ValueError")
    assert "alert not sent" in caplog.text
    assert alert_failure(None, ConfigError("bad")) == []  # no config, no hook: nothing to do


# ---- drift ---------------------------------------------------------------------------------


def test_drift_with_policy_warn_alerts_once_when_computed(tmp_path, make_config):
    out = tmp_path / "alert.json"
    cfg = make_config(dump_env_to(out))
    args = {"pipeline_run_id": "r1", "experiment_id": "1"}
    assert alert_drift(cfg, DRIFT, computed=False, **args) == []  # reused: it alerted then
    assert alert_drift(cfg, {**DRIFT, "detected": False}, computed=True, **args) == []
    assert alert_drift(cfg, DRIFT, computed=True, **args) == ["sent command: exit 0"]
    env = json.loads(out.read_text())
    assert env["MLFLOW_PIPELINE_ALERT_KIND"] == "drift"
    assert env["MLFLOW_PIPELINE_ALERT_STAGE"] == "profile"
    assert env["MLFLOW_PIPELINE_ALERT_ERROR"].startswith(
        "drift detected against customers v1 (@champion): 1 of 3 feature(s)"
    )
    details = json.loads(env["MLFLOW_PIPELINE_ALERT_JSON"])["details"]
    assert details == {
        "policy": "warn",
        "drifted": ["income"],
        "reference": {"model": "customers", "version": "1", "alias": "champion"},
    }


def test_drift_with_policy_fail_is_one_drift_alert_from_the_failure(tmp_path, make_config):
    out = tmp_path / "alert.json"
    cfg = make_config("validation.drift.policy=fail", dump_env_to(out))
    args = {"pipeline_run_id": "r1", "experiment_id": "1"}
    assert alert_drift(cfg, DRIFT, computed=True, **args) == []  # the failure will say it
    error = DriftError("[profile] drift detected ...", stage="profile", drift=DRIFT)
    assert alert_failure(cfg, error, **args) == ["sent command: exit 0"]
    payload = json.loads(json.loads(out.read_text())["MLFLOW_PIPELINE_ALERT_JSON"])
    assert payload["kind"] == "drift"
    assert payload["details"]["policy"] == "fail"


# ---- the failed pipeline run, handed over by the runner -----------------------------------


def test_a_failed_pipeline_run_is_linked_from_its_error(tmp_path, make_config, tracking_store):
    frame = mixed_frame()
    frame.loc[:2, "churned"] = None  # a null target fails the validate gate
    path = tmp_path / "customers.csv"
    frame.to_csv(path, index=False)
    with webhook_server() as server:
        cfg = make_config(
            *csv_overrides(path, "model=logistic_regression", f"alerts.webhook={server.url}")
        )
        sent: list[str] = []

        def on_failure(error: BaseException, run_id: str, experiment_id: str) -> None:
            sent.extend(
                alert_failure(cfg, error, pipeline_run_id=run_id, experiment_id=experiment_id)
            )

        with pytest.raises(DataValidationError, match="failed validation"):
            run_pipeline(cfg, [], on_failure=on_failure)
        assert sent[0].startswith("sent webhook")
    [received] = server.received
    payload = received["json"]
    client = tracking_store.client()
    run = client.get_run(payload["pipeline_run_id"])
    assert run.data.tags["pipeline.kind"] == "pipeline"
    assert run.info.status == "FAILED"
    assert payload["experiment_id"] == run.info.experiment_id
    assert payload["stage"] == "validate"
    assert payload["run_link"] == (
        f"{tracking_store.uri}#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )


def test_alerts_module_sends_one_by_hand(tmp_path, tracking_store, capsys):
    out = tmp_path / "alert.json"
    code = alerts.main(
        [
            "--stage",
            "airflow",
            "--error",
            "task killed",
            dump_env_to(out),
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == "sent command: exit 0"
    assert json.loads(out.read_text())["MLFLOW_PIPELINE_ALERT_STAGE"] == "airflow"
