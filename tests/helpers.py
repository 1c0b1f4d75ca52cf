"""Small builders shared by tests (data frames, override lists, run look-ups)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.apps.simulate import DayResult
from mlflow_pipeline.config import load_config

DB_NAME = "mlflow.db"

# What every successful stage run logs, beyond config.yaml and its timing metrics.
EXPECTED_ARTIFACTS = {
    "ingest": {"config.yaml", "cache.json", "data/raw.parquet"},
    "profile": {
        "config.yaml",
        "cache.json",
        "profile.json",
        "drift.json",
        "data/drift_metrics.parquet",
        "reports/profile.html",
    },
    "validate": {
        "config.yaml",
        "cache.json",
        "contract.yaml",
        "data/validated.parquet",
        "reports/validation.html",
    },
    "split": {"config.yaml", "cache.json", "data/train.parquet", "data/test.parquet"},
    "train": {"config.yaml", "cache.json"},
    "evaluate": {"config.yaml", "cache.json", "data/metrics.parquet", "reports/evaluation.html"},
    "register": {
        "config.yaml",
        "cache.json",
        "promotion.json",
        "lineage.json",
        "reports/promotion.html",
    },
}


@dataclass(frozen=True)
class TrackingStore:
    """A tracking + registry store: ``<root>/mlflow.db``, artifacts under ``<root>/mlruns``."""

    root: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / DB_NAME}"

    def client(self) -> MlflowClient:
        """A client bound to this store whatever the process-wide URI is."""
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def config(self, *overrides: str) -> DictConfig:
        """``load_config`` with this store as ``tracking.root``."""
        return load_config([*overrides, f"tracking.root={self.root}"])


def mixed_frame(n: int = 60, *, seed: int = 0) -> pd.DataFrame:
    """A small classification frame: numeric and string columns, missing values in both."""
    rng = np.random.default_rng(seed)
    income = rng.normal(50.0, 10.0, n)
    city = rng.choice(["paris", "lyon", "nice"], n)
    label = ((income > 50) | (city == "nice")).astype(int)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "income": income,
            "age": rng.integers(18, 80, n).astype(float),
            "city": city,
            "plan": rng.choice(["basic", "pro"], n),
            "churned": label,
        }
    )
    frame.loc[frame.index % 7 == 0, "income"] = np.nan
    frame.loc[frame.index % 9 == 0, "city"] = None
    return frame


def csv_overrides(path: Path, *extra: str) -> list[str]:
    """Overrides that point ``data=csv`` at a ``mixed_frame`` CSV."""
    return [
        "data=csv",
        f"data.path={path}",
        "data.target=churned",
        "data.task=classification",
        "data.ignore_columns=[customer_id]",
        *extra,
    ]


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str:
    """The version (as text) holding ``alias`` of ``model_name``."""
    return str(client.get_model_version_by_alias(model_name, alias).version)


def read_table(path: Path) -> list[DayResult]:
    """``apps.simulate.write_table``'s file read back."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)

    def optional(text: str) -> str | None:
        return text or None

    def number(text: str) -> float | None:
        return float(text) if text else None

    return [
        DayResult(
            day=int(row["day"]),
            rows=int(row["rows"]),
            shifted=row["shifted"] == "True",
            drift=row["drift"],
            drifted=tuple(n for n in row["drifted"].split(";") if n),
            metric=row["metric"],
            challenger_score=number(row["challenger_score"]),
            champion_score=number(row["champion_score"]),
            version=optional(row["version"]),
            decision=row["decision"],
            champion_after=optional(row["champion_after"]),
            reason=row["reason"],
            pipeline_run_id=optional(row["pipeline_run_id"]),
            data=row["data"],
        )
        for row in frame.to_dict("records")
    ]


def reference_pipeline():
    """The reference pipeline as the default config declares it."""
    from mlflow_pipeline.engine.pipeline import load_pipeline

    return load_pipeline(load_config())


REFERENCE = reference_pipeline()
