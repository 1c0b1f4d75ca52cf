"""What the end-to-end tests share: run the real CLIs in a subprocess against a tracking store
in a temporary directory, read the store back, and write small user CSV files."""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_pipeline.data.examples import customers
from tests.helpers import EXPECTED_ARTIFACTS

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
STAGES = ("ingest", "profile", "validate", "split", "train", "evaluate", "register")

EXPECTED_ROW_METRICS = {
    "ingest": {"rows.output.raw"},
    "profile": {"rows.input.raw", "rows.output.drift_metrics"},
    "validate": {"rows.input.raw", "rows.output.validated"},
    "split": {"rows.input.validated", "rows.output.train", "rows.output.test"},
    "train": {"rows.input.train"},
    "evaluate": {"rows.input.test", "rows.output.metrics"},
    "register": {"rows.input.test", "rows.input.metrics"},
}
TIMING_METRICS = {"wall_time_s", "peak_rss_mb"}
CLASSIFICATION_METRICS = {"accuracy", "f1", "roc_auc", "log_loss"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}

# The user CSV the champion of `champion_store` was trained on; the model is named after it.
CHAMPION_DATA = "customers.csv"
CHAMPION_MODEL = "customers"
CHAMPION_OVERRIDES = (
    "data=csv",
    "data.target=label",
    "data.task=classification",
    "model=logistic_regression",
)

# Variables from the caller's shell or test process that would redirect or resume runs.
SCRUBBED_ENV = (
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_REGISTRY_URI",
    "HYDRA_FULL_ERROR",
)
TIMEOUT_S = 600


@dataclass
class Store:
    """A tracking store (SQLite + artifacts) under ``root``; CLIs run with ``root`` as cwd."""

    root: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @functools.cached_property
    def client(self) -> MlflowClient:
        # Created lazily: the first CLI run creates the database, one process at a time.
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # ---- running the real CLIs -------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["MLFLOW_TRACKING_URI"] = self.uri
        # `mlflow run` leaves a temp folder behind per run: keep them in the test's directory.
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
        return env

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )

    def pipeline(self, *overrides: str) -> subprocess.CompletedProcess[str]:
        """``mlflow-pipeline [overrides] tracking.root=<root>``."""
        return self.run(VENV_BIN / "mlflow-pipeline", *overrides, f"tracking.root={self.root}")

    def mlflow_run(
        self,
        uri: str | Path = REPO,
        *,
        hydra_options: str = "",
        experiment_name: str | None = None,
        entry_point: str | None = None,
        **params: str,
    ) -> subprocess.CompletedProcess[str]:
        """``mlflow run <uri> [-e ENTRY] --env-manager local -P hydra_options="tracking.root=<root>
        ..."``."""
        options = f"tracking.root={shlex.quote(str(self.root))} {hydra_options}".strip()
        args: list[str | Path] = [VENV_BIN / "mlflow", "run", uri, "--env-manager", "local"]
        if entry_point:
            args += ["-e", entry_point]
        if experiment_name:
            args += ["--experiment-name", experiment_name]
        for key, value in {"hydra_options": options, **params}.items():
            args += ["-P", f"{key}={value}"]
        return self.run(*args)

    # ---- reading the store back ------------------------------------------------------------

    def runs(self, filter_string: str = "") -> list[Run]:
        """Every run in every experiment matching ``filter_string``, oldest first."""
        experiment_ids = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(
            experiment_ids,
            filter_string,
            order_by=["attributes.start_time ASC"],
            max_results=1000,
        )

    def runs_of_kind(self, kind: str) -> list[Run]:
        return self.runs(f"tags.`pipeline.kind` = '{kind}'")

    def children(self, run_id: str) -> list[Run]:
        return self.runs(f"tags.`mlflow.parentRunId` = '{run_id}'")

    def stage_runs(self, pipeline_run_id: str) -> dict[str, Run]:
        """The child runs of a pipeline run by stage name; fails on a duplicate stage."""
        children = self.children(pipeline_run_id)
        by_stage = {r.data.tags.get("pipeline.stage"): r for r in children}
        assert len(by_stage) == len(children), [r.info.run_name for r in children]
        return by_stage

    def artifacts(self, run_id: str, path: str | None = None) -> set[str]:
        """Every artifact file path of a run (recursive)."""
        found: set[str] = set()
        for entry in self.client.list_artifacts(run_id, path):
            if entry.is_dir:
                found |= self.artifacts(run_id, entry.path)
            else:
                found.add(entry.path)
        return found

    def text(self, run_id: str, path: str) -> str:
        dst = self.root / "downloads" / run_id
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst))).read_text("utf-8")

    def promotion(self, register_run_id: str) -> dict:
        return json.loads(self.text(register_run_id, "promotion.json"))

    def model_names(self) -> set[str]:
        return {m.name for m in self.client.search_registered_models()}

    def versions(self, name: str) -> list[ModelVersion]:
        found = self.client.search_model_versions(f"name='{name}'")
        return sorted(found, key=lambda v: int(v.version))

    def version_numbers(self, name: str) -> list[str]:
        return [str(v.version) for v in self.versions(name)]

    def alias(self, name: str, alias: str) -> str | None:
        """The version number (as text) holding ``alias``, or None."""
        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def load_model(self, name: str, version: str) -> Any:
        """A registered version loaded in this process, as a user would load it."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", self.uri)
            mp.setenv("MLFLOW_REGISTRY_URI", self.uri)
            try:
                return mlflow.sklearn.load_model(f"models:/{name}/{version}")
            finally:
                mlflow.set_tracking_uri(None)
                mlflow.set_registry_uri(None)


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{shlex.join(result.args)} exited {result.returncode}\n"
        f"--- stdout\n{tail(result.stdout)}\n--- stderr\n{tail(result.stderr)}"
    )


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit, a readable message naming every ``needle`` on stderr, no traceback."""
    context = f"--- stderr\n{tail(result.stderr, 80)}"
    assert result.returncode != 0, f"expected a failure\n{context}"
    assert "Traceback" not in result.stderr, context
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not on stderr\n{context}"


def assert_stage_run_complete(store: Store, run: Run, pipeline_run_id: str | None) -> None:
    """A FINISHED stage run with the tags, params, metrics and artifacts of its stage."""
    stage = run.data.tags["pipeline.stage"]
    assert run.info.status == "FINISHED", (stage, run.data.tags.get("pipeline.error"))
    assert run.data.tags["pipeline.kind"] == "stage"
    if pipeline_run_id is not None:
        assert run.data.tags["pipeline.run_id"] == pipeline_run_id
        assert run.data.tags["mlflow.parentRunId"] == pipeline_run_id
    assert run.data.params, f"{stage} logged no params"
    missing_metrics = (TIMING_METRICS | EXPECTED_ROW_METRICS[stage]) - set(run.data.metrics)
    assert not missing_metrics, (stage, missing_metrics)
    digests = [t for t in run.data.tags if t.startswith("pipeline.digest.output.")]
    assert digests, f"{stage} tagged no output digests"
    # A cache hit's outputs are the artifacts of the run it reused.
    holder = run.data.tags.get("pipeline.cache.source_run", run.info.run_id)
    missing_artifacts = EXPECTED_ARTIFACTS[stage] - store.artifacts(holder)
    assert not missing_artifacts, (stage, missing_artifacts)
    if stage == "train":
        assert run.data.tags["pipeline.model_uri"].startswith("models:/")


def write_classification_csv(
    path: Path,
    *,
    rows: int = 300,
    seed: int = 0,
    null_target_rows: int = 0,
    text_in_numeric_rows: int = 0,
    extra_column: bool = False,
) -> Path:
    """A user's classification CSV: numeric columns with gaps, a string categorical column with
    gaps, an integer 0/1 target ``label``; optionally broken in the ways users break data."""
    df = customers(rows, seed=seed)  # the README walkthroughs' example data
    if null_target_rows:
        df["label"] = df["label"].astype("Float64")
        df.loc[: null_target_rows - 1, "label"] = None
    if text_in_numeric_rows:
        df["income"] = df["income"].astype(object)
        df.loc[: text_in_numeric_rows - 1, "income"] = "n/a (refused)"
    if extra_column:
        df["notes"] = "free text"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def write_regression_csv(path: Path, *, rows: int = 300, seed: int = 1) -> Path:
    """A user's regression CSV: numeric and categorical features with gaps, numeric target."""
    rng = np.random.default_rng(seed)
    area = rng.uniform(30.0, 200.0, rows)
    rooms = rng.integers(1, 7, rows).astype(float)
    district = rng.choice(["north", "south", "centre"], rows)
    bonus = np.select([district == "centre", district == "north"], [80.0, 20.0], 0.0)
    price = 3.0 * area + 15.0 * rooms + bonus + rng.normal(0.0, 20.0, rows)
    df = pd.DataFrame({"area": area, "rooms": rooms, "district": district, "price": price})
    df.loc[rng.choice(rows, rows // 15, replace=False), "rooms"] = np.nan
    df.loc[rng.choice(rows, rows // 15, replace=False), "district"] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path
