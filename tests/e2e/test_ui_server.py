"""The MLflow UI, started with the README's arguments, shows the runs, artifacts and aliases."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine.runner import run_pipeline

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tracking store with one finished pipeline, and `mlflow ui` serving it on loopback."""
    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    cfg = load_config([f"tracking.root={tmp_path}", "model.max_iter=30"])
    result = run_pipeline(cfg)
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI")
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "ui",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{base}/health", timeout=2).ok:
                    break
            except requests.RequestException:  # refused, or accepted but slow to answer
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail("mlflow ui did not become healthy within 90 s")
            time.sleep(0.5)
        yield base, result
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_ui_shows_pipeline_runs_artifacts_and_aliases(ui) -> None:
    base, result = ui
    runs = requests.post(
        f"{base}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [result.experiment_id], "max_results": 100},
        timeout=60,
    ).json()["runs"]
    names = sorted(
        next(t["value"] for t in r["data"]["tags"] if t["key"] == "mlflow.runName") for r in runs
    )
    stages = ["ingest", "profile", "validate", "split", "train", "evaluate", "register"]
    # The pipeline run is named <model>-<data>-<config key>.
    [pipeline_name] = [n for n in names if n not in stages]
    assert re.fullmatch(r"\w+-breast_cancer-[0-9a-f]{6}", pipeline_name), pipeline_name
    assert sorted(n for n in names if n in stages) == sorted(stages)
    register_run = result.stage_run_ids["register"]
    artifact = requests.get(
        f"{base}/get-artifact",
        params={"path": "promotion.json", "run_uuid": register_run},
        timeout=60,
    )
    assert artifact.ok
    assert artifact.json()["promote"] is True

    model = requests.get(
        f"{base}/api/2.0/mlflow/registered-models/get",
        params={"name": "breast_cancer"},
        timeout=60,
    ).json()["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model["aliases"]}
    assert aliases == {"champion": "1", "challenger": "1"}

    page = requests.get(base, timeout=60)
    assert page.ok
    assert "<html" in page.text.lower()
