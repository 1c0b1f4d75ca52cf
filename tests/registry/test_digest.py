"""The content digest of a logged model: the same model logged twice has one digest (although
skops writes different bytes each time), any change to the model or its MLmodel does not."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import mlflow
import pytest
import yaml

from mlflow_pipeline.config import load_config
from mlflow_pipeline.registry.digest import content_digest, directory_digest, skops_digest
from mlflow_pipeline.stages.ingest import ingest
from mlflow_pipeline.stages.split import split
from mlflow_pipeline.stages.train import train
from mlflow_pipeline.store import artifacts


@pytest.fixture(scope="module")
def models():
    """Two trainings of one config (the same model) and one of another."""

    def fitted(*overrides: str):
        cfg = load_config(["model=random_forest", "model.n_estimators=3", *overrides])
        return train(cfg, split(cfg, ingest(cfg)["raw"])["train"])["model"]

    return fitted(), fitted(), fitted("model.max_depth=2")


def logged(model) -> str:
    with mlflow.start_run():
        return artifacts.log_model(model.estimator, model.input_example)


def local(uri: str, root: Path) -> Path:
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(root)))


def test_the_same_model_logged_twice_has_one_digest(models, tmp_path):
    first, again, other = (logged(m) for m in models)
    a, b = local(first, tmp_path / "a"), local(again, tmp_path / "b")
    # What the digest looks through: skops names arrays by id(), MLmodel by run and time.
    assert (a / "model.skops").read_bytes() != (b / "model.skops").read_bytes()
    with zipfile.ZipFile(a / "model.skops") as x, zipfile.ZipFile(b / "model.skops") as y:
        assert sorted(x.namelist()) != sorted(y.namelist())
    assert (a / "MLmodel").read_text() != (b / "MLmodel").read_text()

    digest = content_digest(first)
    assert digest.startswith("sha256:")
    assert len(digest) == len("sha256:") + 64
    assert content_digest(again) == digest
    assert directory_digest(a) == digest
    assert content_digest(other) != digest


def test_what_changes_the_digest(models, tmp_path):
    model = local(logged(models[0]), tmp_path / "m")
    digest = directory_digest(model)

    def variant(change) -> str:
        copy = tmp_path / f"copy-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(model, copy)
        change(copy)
        return directory_digest(copy)

    def edit_mlmodel(**fields):
        def change(root: Path) -> None:
            mlmodel = yaml.safe_load((root / "MLmodel").read_text())
            mlmodel.update(fields)
            (root / "MLmodel").write_text(yaml.safe_dump(mlmodel))

        return change

    # Fields that name the logging, not the model; MLflow's registration note.
    assert variant(edit_mlmodel(run_id="other", utc_time_created="2000-01-01")) == digest
    assert variant(lambda r: (r / "registered_model_meta").write_text("model_name: x")) == digest
    # The model's description, environment and files.
    assert variant(edit_mlmodel(signature=None)) != digest
    assert variant(lambda r: (r / "requirements.txt").write_text("scikit-learn==0.1\n")) != digest
    assert variant(lambda r: (r / "extra.txt").write_text("x")) != digest


def test_an_id_scikit_learn_keeps_in_a_fitted_vectorizer_is_not_content(tmp_path):
    """TfidfVectorizer stores id(stop_words) when fitted: another value in every process, so
    the same model trained twice (a rerun, `reproduce`) would be registered twice."""
    import skops.io
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = ["late delivery again", "great service", "late and rude", "great value"]
    fitted = TfidfVectorizer().fit(texts)
    digests = []
    for i, marker in enumerate((fitted._stop_words_id, fitted._stop_words_id + 4096)):
        fitted._stop_words_id = marker  # what the next process records for the same fit
        path = tmp_path / f"{i}.skops"
        skops.io.dump(fitted, path)
        digests.append(skops_digest(path))
    assert digests[0] == digests[1]
    other = TfidfVectorizer(max_features=2).fit(texts)
    skops.io.dump(other, tmp_path / "other.skops")
    assert skops_digest(tmp_path / "other.skops") != digests[0]
