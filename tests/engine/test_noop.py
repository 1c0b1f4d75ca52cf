"""The no-op fast path, through the real command line on a real SQLite store: a rerun with
nothing changed runs and records nothing; a changed data file, a run of another config, or
``cache.fast_noop=false`` take the normal path."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.datasets import load_breast_cancer

from mlflow_pipeline.config import PROJECT_ROOT
from mlflow_pipeline.engine import noop

FAST = "nothing to do:"
# Up to split: no model is registered, so no champion changes what the next run compares with.
STEPS = "steps=[ingest,profile,validate,split]"


def cli(work: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlflow_pipeline.cli.entry import main; main()",
            "data=csv",
            f"data.path={work / 'cancer.csv'}",
            "data.target=target",
            "data.task=classification",
            STEPS,
            f"tracking.root={work}",
            f"hydra.run.dir={work / 'hydra'}",
            *overrides,
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def pipeline_runs(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute(
            "select count(*) from tags where key = 'pipeline.kind' and value = 'pipeline'"
        ).fetchone()[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("noop")
    load_breast_cancer(as_frame=True).frame.to_csv(work / "cancer.csv", index=False)
    cold = cli(work)
    assert FAST not in cold.stdout
    assert "4 ran" in cold.stdout
    return work


def test_a_rerun_with_nothing_changed_runs_and_records_nothing(work: Path):
    db = work / "mlflow.db"
    before = (db.stat().st_mtime_ns, pipeline_runs(db))
    again = cli(work)
    assert FAST in again.stdout, again.stdout + again.stderr
    assert "nothing ran and nothing was recorded" in again.stdout
    assert (db.stat().st_mtime_ns, pipeline_runs(db)) == before
    stamps = list((work / noop.STAMP_DIR).glob("*.json"))
    assert len(stamps) == 1  # beside the store it describes


def test_the_normal_path_when_asked_for_or_when_anything_changed(work: Path):
    db = work / "mlflow.db"
    recorded = cli(work, "cache.fast_noop=false")
    assert FAST not in recorded.stdout
    assert "cache: 4 hit(s)" in recorded.stdout
    # The store was written to by that run: the stamp no longer vouches for it...
    after = cli(work)
    assert FAST not in after.stdout
    assert "cache: 4 hit(s)" in after.stdout
    # ...until a run of hits leaves a new one.
    assert FAST in cli(work).stdout
    runs = pipeline_runs(db)
    # Another config is another stamp: this one runs normally.
    assert FAST not in cli(work, "split.test_size=0.3").stdout
    # A data file rewritten: ingest runs again (its digest decides), the rest follows.
    csv = work / "cancer.csv"
    csv.write_text(csv.read_text().replace("\n", "\n", 1))  # same bytes, new mtime
    touched = cli(work)
    assert FAST not in touched.stdout
    assert "cache: 4 hit(s)" in touched.stdout
    assert pipeline_runs(db) == runs + 2
    # New content of the same size with its modification time put back, as `cp -p` or
    # `rsync -t` leave it: the file's change time still tells, and ingest runs again.
    assert FAST in cli(work).stdout
    facts = csv.stat()
    text = csv.read_text()
    first_value = text.splitlines()[1].split(",")[0]
    edited = text.replace(first_value, first_value[:-1] + str((int(first_value[-1]) + 1) % 10), 1)
    assert len(edited) == len(text)
    assert edited != text
    csv.write_text(edited)
    os.utime(csv, ns=(facts.st_atime_ns, facts.st_mtime_ns))
    assert (csv.stat().st_size, csv.stat().st_mtime_ns) == (facts.st_size, facts.st_mtime_ns)
    changed = cli(work)
    assert FAST not in changed.stdout
    assert "ran [ingest," in changed.stdout, changed.stdout
