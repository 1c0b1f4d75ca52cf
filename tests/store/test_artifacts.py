"""Stage datasets as run artifacts: parquet frames, text, tables, models and their digests."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.ensemble import RandomForestClassifier

from mlflow_pipeline.errors import StageError, UntrustedModelError
from mlflow_pipeline.store import artifacts
from tests.helpers import csv_overrides, mixed_frame


@pytest.fixture
def run_id(tracking_store) -> str:
    client = tracking_store.client()
    experiment_id = client.create_experiment(
        "io", artifact_location=(tracking_store.root / "art").as_uri()
    )
    return client.create_run(experiment_id).info.run_id


def test_digest_is_stable_and_sees_every_value():
    frame = mixed_frame()
    assert artifacts.digest(frame) == artifacts.digest(mixed_frame())
    assert len(artifacts.digest(frame)) == 64
    changed = frame.copy()
    changed.loc[59, "age"] += 1
    assert artifacts.digest(changed) != artifacts.digest(frame)
    assert artifacts.digest(frame.rename(columns={"age": "years"})) != artifacts.digest(frame)
    assert artifacts.digest(frame.astype({"age": "float32"})) != artifacts.digest(frame)
    # The index is not content.
    assert artifacts.digest(frame.set_axis(range(100, 160))) == artifacts.digest(frame)


def test_digest_of_unhashable_cells():
    frame = pd.DataFrame({"a": [[1, 2], [3]]})
    assert artifacts.digest(frame) != artifacts.digest(pd.DataFrame({"a": [[1, 2], [4]]}))


def test_frame_round_trip(tracking_store, run_id: str):
    frame = mixed_frame()
    path = artifacts.save_frame(tracking_store.client(), run_id, "train", frame)
    assert path == "data/train.parquet"
    loaded = artifacts.load_frame(run_id, "train")
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=False)
    assert loaded["city"].isna().sum() == frame["city"].isna().sum()
    assert [a.path for a in tracking_store.client().list_artifacts(run_id, "data")] == [path]


def test_save_frame_digested_writes_the_frame_and_returns_its_digest(
    tracking_store, run_id: str, monkeypatch
):
    client = tracking_store.client()
    frame = mixed_frame()
    assert artifacts.save_frame_digested(client, run_id, "train", frame) == artifacts.digest(frame)
    pd.testing.assert_frame_equal(artifacts.load_frame(run_id, "train"), frame, check_dtype=False)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_disk)
    with pytest.raises(OSError, match="No space left"):  # the write's error, not swallowed
        artifacts.save_frame_digested(client, run_id, "test", frame)
    monkeypatch.undo()
    monkeypatch.setattr(artifacts, "digest", lambda df: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # the digest's error, too
        artifacts.save_frame_digested(client, run_id, "test", frame)


def test_a_write_failing_midway_leaves_the_earlier_file_and_no_partial(
    tracking_store, run_id: str, monkeypatch
):
    """Written in place on a local store under a temporary name: a write that fails after some
    bytes (a full disk) leaves data/<name>.parquet as it was and no partial file."""
    import pyarrow.parquet as pq

    client = tracking_store.client()
    earlier = pd.DataFrame({"x": [1.0, 2.0]})
    artifacts.save_frame(client, run_id, "train", earlier)
    real = pq.ParquetWriter.write_table

    def full_disk(self, table, *args, **kwargs):
        real(self, table, *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left"):
        artifacts.save_frame(client, run_id, "train", pd.DataFrame({"x": range(100_000)}))
    monkeypatch.undo()
    root = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == [
        "data/train.parquet"
    ]
    pd.testing.assert_frame_equal(artifacts.load_frame(run_id, "train"), earlier)


def test_an_unreadable_frame_is_a_stage_error_saying_so(tracking_store, run_id: str, monkeypatch):
    """There but unreadable (an I/O error) is not "not an artifact"."""
    artifacts.save_frame(tracking_store.client(), run_id, "train", pd.DataFrame({"x": [1.0]}))

    def io_error(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pd, "read_parquet", io_error)
    with pytest.raises(StageError, match=r"dataset 'train' of run \w+ cannot be read: .*output"):
        artifacts.load_frame(run_id, "train")


def test_missing_frame_is_a_stage_error(run_id: str):
    with pytest.raises(StageError, match=rf"dataset 'test' is not an artifact of run {run_id}"):
        artifacts.load_frame(run_id, "test")


def test_text_round_trip_in_a_folder(tracking_store, run_id: str):
    client = tracking_store.client()
    assert artifacts.save_text(client, run_id, "reports/note.txt", "héllo\n") == "reports/note.txt"
    assert artifacts.save_text(client, run_id, "top.yaml", "a: 1\n") == "top.yaml"
    assert artifacts.load_text(run_id, "reports/note.txt") == "héllo\n"
    assert artifacts.load_text(run_id, "top.yaml") == "a: 1\n"


def test_missing_text_is_a_stage_error(run_id: str):
    with pytest.raises(StageError, match=r"'nope\.json' is not an artifact of run"):
        artifacts.load_text(run_id, "nope.json")


def test_table_is_csv(tracking_store, run_id: str):
    table = pd.DataFrame({"column": ["a", None], "failure_case": ["x", "y"]})
    artifacts.save_table(tracking_store.client(), run_id, "failures/raw.csv", table)
    assert artifacts.load_text(run_id, "failures/raw.csv").splitlines() == [
        "column,failure_case",
        "a,x",
        ",y",
    ]


def test_pip_requirements_are_pinned():
    requirements = artifacts.pip_requirements()
    assert any(r.startswith("mlflow==") for r in requirements)
    assert any(r.startswith("scikit-learn==") for r in requirements)
    assert all("==" in r for r in requirements)


def test_logged_forest_loads_back_and_predicts_the_same(tracking_store):
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50)})
    y = (x["a"] > 0).astype(int)
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    with mlflow.start_run() as run:
        uri = artifacts.log_model(model, x.head(3))
    assert uri.startswith("models:/")
    loaded = mlflow.sklearn.load_model(uri)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    info = mlflow.models.get_model_info(uri)
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs] == ["a", "b"]
    assert info.run_id == run.info.run_id


def test_logging_a_model_does_not_map_every_installed_distribution(tracking_store, monkeypatch):
    """MLflow's requirement check maps every installed distribution first (~1.8 s per model);
    ours needs only the pinned packages, and leaves MLflow's map as it found it."""
    from mlflow.utils import requirements_utils

    scans: list[int] = []

    def scan_everything() -> dict:
        scans.append(1)  # MLflow's check swallows any error: count calls instead
        return {}

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    monkeypatch.setattr(requirements_utils, "_PACKAGES_TO_MODULES", None)
    monkeypatch.setattr(
        requirements_utils.importlib_metadata, "packages_distributions", scan_everything
    )
    model, x = _forest()
    with mlflow.start_run():
        uri = artifacts.log_model(model, x.head(3))
    assert scans == []
    assert requirements_utils._MODULES_TO_PACKAGES is None
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    assert sorted(requirements) == sorted(artifacts.pip_requirements())


# ---- loading only what we trust ------------------------------------------------------------


class Tripwire:
    """A "model" whose unpickling creates ``marker``: proof that its code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.marker),))


def _forest() -> tuple[RandomForestClassifier, pd.DataFrame]:
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50)})
    return RandomForestClassifier(n_estimators=3, random_state=0).fit(x, x["a"] > 0), x


def test_our_own_model_loads_as_trusted(tracking_store):
    model, x = _forest()
    with mlflow.start_run():
        uri = artifacts.log_model(model, x.head(3))
    loaded = artifacts.load_trusted_model(uri)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_a_pickled_model_is_refused_without_running_it(tracking_store, tmp_path: Path):
    marker = tmp_path / "ran"
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            Tripwire(marker), name="model", serialization_format="cloudpickle", pip_requirements=[]
        )
    with pytest.raises(UntrustedModelError, match=r"serialized with cloudpickle.*allow_unsafe"):
        artifacts.load_trusted_model(info.model_uri)
    with pytest.raises(UntrustedModelError, match="cloudpickle"):
        artifacts.trusted_model_copy(info.model_uri, tmp_path / "copy")
    assert not marker.exists()
    artifacts.load_trusted_model(info.model_uri, allow_unsafe=True)
    assert marker.exists()  # the tripwire works


def test_a_skops_model_needing_other_types_is_refused(tracking_store):
    """skops would load it, since its MLmodel file trusts what it needs; our list does not."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    model, x = _forest()
    model = make_pipeline(FunctionTransformer(eval), model)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            pip_requirements=[],
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )
    with pytest.raises(UntrustedModelError, match="outside the trusted list: builtins.eval"):
        artifacts.load_trusted_model(info.model_uri)


def test_a_model_served_by_other_code_is_refused(tmp_path: Path):
    model, _ = _forest()
    local = tmp_path / "model"
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    mlflow.sklearn.save_model(model, local, pip_requirements=[], skops_trusted_types=trusted)
    path, types = artifacts.check_trusted_model(local, "m")
    assert path.name == "model.skops"
    assert types <= artifacts.TRUSTED_TYPES
    mlmodel = (local / "MLmodel").read_text()
    evil = mlmodel.replace("loader_module: mlflow.sklearn", "loader_module: evil")
    (local / "MLmodel").write_text(evil)
    with pytest.raises(UntrustedModelError, match="loader_module 'evil'"):
        artifacts.check_trusted_model(local, "m")
    (local / "MLmodel").write_text(mlmodel.replace("model.skops", "../elsewhere.skops"))
    with pytest.raises(UntrustedModelError, match="not in the model"):
        artifacts.check_trusted_model(local, "m")


def test_a_model_carrying_another_projects_code_names_that_project(tmp_path: Path):
    """A model a project with its own code trained, loaded elsewhere: refused, saying to run
    inside that project (not only to allow unsafe models)."""
    model, _ = _forest()
    package = tmp_path / "churn_code"
    package.mkdir()
    (package / "__init__.py").write_text("")
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    local = tmp_path / "model"
    mlflow.sklearn.save_model(
        model, local, pip_requirements=[], skops_trusted_types=trusted, code_paths=[str(package)]
    )
    with pytest.raises(UntrustedModelError) as refused:
        artifacts.check_trusted_model(local, "models:/churn/1")
    message = str(refused.value)
    assert "models:/churn/1 was trained by a project with its own code (package(s) churn_code)" in (
        message
    )
    assert "run this inside the project that trained it, whose src/ holds that code" in message


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_every_model_and_features_option_needs_only_trusted_types(task: str, tmp_path: Path):
    """TRUSTED_TYPES covers what every conf/model x conf/features option produces: a new
    option needing another type fails here, naming it."""
    from mlflow_pipeline.config import PACKAGE_CONF, load_config
    from mlflow_pipeline.stages.train import train

    frame = mixed_frame(80)
    if task == "regression":
        frame["churned"] = frame["income"].fillna(50.0) / 10.0
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    needed: set[str] = set()
    for model in sorted(p.stem for p in (PACKAGE_CONF / "model").glob("*.yaml")):
        for features in sorted(p.stem for p in (PACKAGE_CONF / "features").glob("*.yaml")):
            cfg = load_config(
                csv_overrides(path, f"data.task={task}", f"model={model}", f"features={features}")
            )
            estimator = train(cfg, frame)["model"].estimator
            needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(estimator)))
    assert needed <= artifacts.TRUSTED_TYPES, sorted(needed - artifacts.TRUSTED_TYPES)
