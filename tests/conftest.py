"""Shared fixtures: every test gets its own real SQLite tracking store in ``tmp_path``.

Nothing here mocks MLflow. An empty, migrated store is built once per session and copied per
test (migrating a new SQLite file costs about a second).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline import interrupt
from tests.helpers import DB_NAME, TrackingStore, mixed_frame


@pytest.fixture(scope="session")
def empty_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty tracking database to copy (built once per session)."""
    root = tmp_path_factory.mktemp("store-template")
    uri = f"sqlite:///{root / DB_NAME}"
    # The default experiment records <cwd>/mlruns as its artifact location: keep it in root.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments()
        client.search_registered_models()
    return root / DB_NAME


@pytest.fixture(scope="session")
def open_store(
    empty_store_template: Path,
) -> Callable[[Path], contextlib.AbstractContextManager[TrackingStore]]:
    """``with open_store(root) as store:`` points this process at a fresh store in ``root``.

    On exit: ends any active run and restores the tracking/registry URIs and environment.
    For module-scoped fixtures that share expensive pipeline runs between tests.
    """

    @contextlib.contextmanager
    def _open(root: Path) -> Iterator[TrackingStore]:
        root.mkdir(parents=True, exist_ok=True)
        store = TrackingStore(root=root)
        shutil.copyfile(empty_store_template, root / DB_NAME)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", store.uri)
            mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
            mp.delenv("MLFLOW_RUN_ID", raising=False)
            mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
            mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
            try:
                yield store
            finally:
                while mlflow.active_run() is not None:
                    mlflow.end_run()
                mlflow.set_tracking_uri(None)
                mlflow.set_registry_uri(None)

    return _open


@pytest.fixture(autouse=True)
def no_interrupt_left() -> Iterator[None]:
    """A Ctrl-C a test simulated is its own: ``interrupt.requested`` lasts as long as the
    process (a command's), so a later test's ``checkpoint`` would raise it (a stage test run
    after the CLI's Ctrl-C test, in the same worker, was interrupted)."""
    yield
    interrupt._requested.clear()


@pytest.fixture(autouse=True)
def tracking_store(
    tmp_path: Path, open_store: Callable[[Path], contextlib.AbstractContextManager[TrackingStore]]
) -> Iterator[TrackingStore]:
    """Every test: ``MLFLOW_TRACKING_URI=sqlite:///<tmp_path>/mlflow.db``, reset afterwards."""
    with open_store(tmp_path) as store:
        yield store


@pytest.fixture
def make_config(tracking_store: TrackingStore) -> Callable[..., DictConfig]:
    """``make_config("model=random_forest", ...)``: a composed config using this test's store."""
    return tracking_store.config


@pytest.fixture
def mixed_csv(tmp_path: Path) -> Path:
    """``mixed_frame()`` as a CSV file (string categoricals, missing values, an id column)."""
    path = tmp_path / "customers.csv"
    mixed_frame().to_csv(path, index=False)
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with end-to-end (``slow``) tests first, each module's tests kept together.

    ``make test`` hands whole modules to its workers (pytest-xdist, ``--dist loadfile``) in
    this order: the long modules start early and the short ones even out the end.
    """
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)
