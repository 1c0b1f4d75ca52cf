"""Failure and drift alerts: a shell command and/or a JSON webhook (``conf/alerts``), told the
kind, stage, error, model and a link to the pipeline run. An alert never hides what it reports:
a hook that fails or times out logs a warning, and the caller carries on as before.

``python -m mlflow_pipeline.engine.alerts --stage STAGE --error MESSAGE [overrides]`` sends one by
hand (a test of the hooks, or a scheduler's own failure callback).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from mlflow_pipeline.config import ALERT_KINDS, AlertsConfig
from mlflow_pipeline.errors import DriftError
from mlflow_pipeline.redaction import redact_text, redact_url, secrets_of
from mlflow_pipeline.tags import Env

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 4000


@dataclass
class Alert:
    """One alert, as the webhook receives it (JSON) and the command sees it (variables)."""

    kind: str  # failure | drift
    stage: str | None
    error: str
    model_name: str | None = None
    pipeline_run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    # <tracking uri>#/experiments/<id>/runs/<run id>: for an http(s) store, the MLflow UI's page
    # of the run (then also ``run_url``); for any other store the same address over its URI
    # (``mlflow ui --backend-store-uri <store>`` serves the run at that fragment).
    run_link: str | None = None
    run_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=socket.gethostname)
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def text(self) -> str:
        """One line for a chat message or a mail subject."""
        head = f"mlflow-pipeline {self.kind}" + (f" at stage {self.stage}" if self.stage else "")
        if self.model_name:
            head += f" (model {self.model_name})"
        first = self.error.strip().splitlines()[0] if self.error.strip() else ""
        return f"{head}: {first}" + (f" {self.run_link}" if self.run_link else "")

    def payload(self) -> dict[str, Any]:
        """The JSON body of the webhook (``text`` first, for chat webhooks)."""
        return {"text": self.text, **asdict(self)}

    def environment(self) -> dict[str, str]:
        """``MLFLOW_PIPELINE_ALERT_*`` variables for a command hook (unset values: empty)."""
        values = {
            "KIND": self.kind,
            "STAGE": self.stage,
            "ERROR": self.error,
            "TEXT": self.text,
            "MODEL": self.model_name,
            "RUN_ID": self.pipeline_run_id,
            "EXPERIMENT_ID": self.experiment_id,
            "TRACKING_URI": self.tracking_uri,
            "RUN_LINK": self.run_link,
            "RUN_URL": self.run_url,
            "JSON": json.dumps(self.payload()),
        }
        return {Env.ALERT_PREFIX + k: "" if v is None else str(v) for k, v in values.items()}


def run_link(
    tracking_uri: str | None, experiment_id: str | None, run_id: str | None
) -> tuple[str | None, str | None]:
    """``(run_link, run_url)`` of a run: the UI's ``#/experiments/<id>/runs/<run>`` form over
    the tracking URI; ``run_url`` only when the store is an http(s) tracking server."""
    if not (tracking_uri and experiment_id and run_id):
        return None, None
    fragment = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        url = tracking_uri.rstrip("/") + "/" + fragment
        return url, url
    return tracking_uri + fragment, None


def make_alert(
    cfg: DictConfig | None,
    *,
    kind: str,
    stage: str | None,
    error: str,
    pipeline_run_id: str | None = None,
    experiment_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> Alert:
    """The alert for ``cfg``'s pipeline (model name and tracking store read from it), with
    every secret of ``cfg`` (and any URI password) redacted from what it says."""
    model_name = tracking_uri = None
    if cfg is not None:
        model_name = _get(cfg, "registry.model_name")
        try:
            from mlflow_pipeline.store.tracking import resolve_tracking

            tracking_uri = resolve_tracking(cfg).uri
        except Exception:  # an unresolvable config is what is being reported
            tracking_uri = os.environ.get(Env.TRACKING_URI)
    tracking_uri = redact_url(tracking_uri) if tracking_uri else tracking_uri
    error = redact_text(error, _secrets(cfg))
    link, url = run_link(tracking_uri, experiment_id, pipeline_run_id)
    if len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + " ..."
    return Alert(
        kind=kind,
        stage=stage,
        error=error,
        model_name=model_name,
        pipeline_run_id=pipeline_run_id,
        experiment_id=experiment_id,
        tracking_uri=tracking_uri,
        run_link=link,
        run_url=url,
        details=details or {},
    )


def send(settings: DictConfig | AlertsConfig | None, alert: Alert) -> list[str]:
    """Send ``alert`` through every hook ``settings`` (``cfg.alerts``) configures, if its kind
    is enabled. Returns one line per hook (``sent ...`` or ``failed ...``). Never raises: a
    failing hook is logged as a warning."""
    outcomes: list[str] = []
    try:
        settings = settings if settings is not None else AlertsConfig()
        kinds = list(_get(settings, "kinds") or ALERT_KINDS)
        if alert.kind not in kinds:
            return outcomes
        timeout = float(_get(settings, "timeout_s") or 10.0)
        command = _get(settings, "command")
        webhook = _get(settings, "webhook") or os.environ.get(Env.ALERT_WEBHOOK) or None
        if command:
            outcomes.append(_guarded("command", lambda: _run_command(command, alert, timeout)))
        if webhook:
            outcomes.append(_guarded("webhook", lambda: _post(webhook, alert, timeout)))
    except Exception as exc:  # a broken alerts config must not replace the error it reports
        outcomes.append(f"failed alert: {type(exc).__name__}: {exc}")
        log.warning("alert not sent: %s: %s", type(exc).__name__, exc)
    return outcomes


def alert_failure(
    cfg: DictConfig | None,
    error: BaseException,
    *,
    pipeline_run_id: str | None = None,
    experiment_id: str | None = None,
) -> list[str]:
    """Alert that a pipeline run failed with ``error`` (what the CLI reports).

    ``pipeline_run_id``/``experiment_id``: the failed run (the runner's ``on_failure`` hands
    them over), or the run ``mlflow run`` made (its experiment from the environment). A
    DriftError with drift detected (policy ``fail``) is a ``drift`` alert. Never raises.
    """
    try:
        if pipeline_run_id and not experiment_id:
            experiment_id = os.environ.get(Env.EXPERIMENT_ID)
        drift = isinstance(error, DriftError) and bool(error.drift.get("detected"))
        details: dict[str, Any] = {"error_type": type(error).__name__}
        if drift:
            details.update(_drift_details(error.drift, "fail"))
        alert = make_alert(
            cfg,
            kind="drift" if drift else "failure",
            stage=getattr(error, "stage", None),
            error=_message(error),
            pipeline_run_id=pipeline_run_id,
            experiment_id=experiment_id,
            details=details,
        )
        return send(_get(cfg, "alerts") if cfg is not None else None, alert)
    except Exception as exc:
        log.warning("alert not sent: %s: %s", type(exc).__name__, exc)
        return [f"failed alert: {exc}"]


def alert_drift(
    cfg: DictConfig,
    drift: dict[str, Any] | None,
    *,
    pipeline_run_id: str,
    experiment_id: str,
    computed: bool,
) -> list[str]:
    """Alert that the drift check flagged this pipeline run and the pipeline went on (policy
    ``warn``). Nothing is sent when no drift was detected, when the drift result was reused
    from an earlier run (``computed`` false: that run alerted), or with policy ``fail`` (the
    run then fails with a DriftError, which the CLI reports as a drift alert). Never raises.
    """
    try:
        policy = _get(cfg, "validation.drift.policy")
        if not drift or not drift.get("detected") or not computed or policy == "fail":
            return []
        from mlflow_pipeline.data.drift import summary

        alert = make_alert(
            cfg,
            kind="drift",
            stage="profile",
            error=summary(drift),
            pipeline_run_id=pipeline_run_id,
            experiment_id=experiment_id,
            details=_drift_details(drift, policy),
        )
        return send(cfg.alerts, alert)
    except Exception as exc:
        log.warning("drift alert not sent: %s: %s", type(exc).__name__, exc)
        return [f"failed alert: {exc}"]


def _drift_details(drift: dict[str, Any], policy: str | None) -> dict[str, Any]:
    reference = drift.get("reference") or {}
    return {
        "policy": policy,
        "drifted": list(drift.get("drifted", [])),
        "reference": {k: reference.get(k) for k in ("model", "version", "alias")},
    }


def _secrets(cfg: DictConfig | None) -> set[str]:
    try:
        return secrets_of(cfg)
    except Exception:  # a config that does not resolve: URI passwords are still redacted
        return set()


def _message(error: BaseException) -> str:
    text = error.message if isinstance(error, MlflowException) else str(error)
    return text or type(error).__name__


def _get(node: Any, dotted: str) -> Any:
    """``node.a.b`` for a DictConfig or dataclass, None where anything is missing."""
    for key in dotted.split("."):
        if node is None:
            return None
        try:
            node = node.get(key) if isinstance(node, DictConfig) else getattr(node, key, None)
        except Exception:  # an interpolation that does not resolve
            return None
    return node


def _guarded(hook: str, send_one: Any) -> str:
    try:
        outcome = send_one()
    except Exception as exc:
        log.warning("alert %s failed: %s", hook, exc)
        return f"failed {hook}: {exc}"
    log.info("alert %s: %s", hook, outcome)
    return f"sent {hook}: {outcome}"


def _run_command(command: str, alert: Alert, timeout: float) -> str:
    """Run ``command`` with ``sh`` and the alert's variables; its whole process group is killed
    on timeout (a hook that backgrounds work must not outlive the deadline)."""
    env = {**os.environ, **alert.environment()}
    process = subprocess.Popen(
        command,
        shell=True,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.communicate()
        raise RuntimeError(f"command timed out after {timeout:g} s and was killed") from None
    if process.returncode != 0:
        tail = " | ".join((output or "").strip().splitlines()[-3:])
        raise RuntimeError(f"command exited {process.returncode}" + (f": {tail}" if tail else ""))
    return "exit 0"


def _post(url: str, alert: Alert, timeout: float) -> str:
    """POST the alert as JSON; any non-2xx answer is a failure. Names the host, not the URL
    (its path may be a secret token)."""
    host = urlsplit(url).netloc or url
    request = urllib.request.Request(
        url,
        data=json.dumps(alert.payload()).encode("utf-8"),
        headers={"Content-Type": "application/json", "User-Agent": "mlflow-pipeline-alerts"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return f"POST {host}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"POST {host}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RuntimeError(f"POST {host}: {reason}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m mlflow_pipeline.engine.alerts --stage S --error MSG [overrides]``: send one
    failure alert with the hooks of the composed config. Exit 0 unless the config is invalid."""
    parser = argparse.ArgumentParser(
        prog="python -m mlflow_pipeline.engine.alerts",
        description="Send a failure alert through the hooks of conf/alerts (as configured by "
        "the overrides).",
    )
    parser.add_argument("--kind", choices=ALERT_KINDS, default="failure")
    parser.add_argument("--stage", default=None, help="the stage (or the scheduler) that failed")
    parser.add_argument("--error", required=True, help="what went wrong")
    parser.add_argument("--run-id", default=None, help="the pipeline run, if there is one")
    parser.add_argument("--experiment-id", default=None)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the pipeline")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from mlflow_pipeline.config import load_config
    from mlflow_pipeline.errors import PipelineError

    try:
        cfg = load_config(args.overrides)
    except PipelineError as exc:
        print(f"mlflow-pipeline: error: {exc}", file=sys.stderr)
        return 1
    alert = make_alert(
        cfg,
        kind=args.kind,
        stage=args.stage,
        error=args.error,
        pipeline_run_id=args.run_id,
        experiment_id=args.experiment_id,
    )
    outcomes = send(cfg.alerts, alert)
    print("\n".join(outcomes) or "no hook configured for this kind of alert (conf/alerts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
