"""Fixtures for the end-to-end tests: one tracking store per test, in the test's tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    Store,
    assert_ok,
    write_classification_csv,
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """An empty tracking store; CLIs run with tmp_path as their working directory."""
    return Store(tmp_path)


@pytest.fixture(scope="session")
def champion_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store where one good pipeline run on customers.csv made version 1 the champion.

    Built once per session; tests get their own copy (``champion_store``).
    """
    root = tmp_path_factory.mktemp("champion-template")
    csv = write_classification_csv(root / CHAMPION_DATA)
    template = Store(root)
    assert_ok(template.pipeline(*CHAMPION_OVERRIDES, f"data.path={csv}"))
    assert template.alias(CHAMPION_MODEL, "champion") == "1"
    return root


@pytest.fixture
def champion_store(tmp_path: Path, champion_template: Path) -> Store:
    """A copy of ``champion_template``'s registry and runs in this test's tmp_path.

    Its experiments keep their artifact locations in the template, so tests write new runs to
    an experiment of their own (``tracking.experiment_name=...``, ``--experiment-name``).
    """
    shutil.copy2(champion_template / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copy2(champion_template / CHAMPION_DATA, tmp_path / CHAMPION_DATA)
    return Store(tmp_path)
