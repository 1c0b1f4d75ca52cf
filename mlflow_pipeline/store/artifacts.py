"""Stage datasets as run artifacts: parquet frames and text files, with content digests."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_pipeline.errors import StageError

FRAME_DIR = "data"


def digest(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's full content: column names, dtypes and every value (not a sample)."""
    h = hashlib.sha256()
    h.update(repr([(str(c), str(t)) for c, t in df.dtypes.items()]).encode())
    try:
        hashed = pd.util.hash_pandas_object(df, index=False, categorize=True)
    except TypeError:  # unhashable cells (lists, dicts): hash their text instead
        hashed = pd.util.hash_pandas_object(df.astype(str), index=False)
    h.update(hashed.to_numpy().tobytes())
    return h.hexdigest()


def text_digest(text: str) -> str:
    """SHA-256 of a text dataset (e.g. the data contract)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def frame_path(name: str) -> str:
    """Artifact path of dataset ``name`` inside its producing run."""
    return f"{FRAME_DIR}/{name}.parquet"


def save_frame(client: MlflowClient, run_id: str, name: str, df: pd.DataFrame) -> str:
    """Log ``df`` as ``data/<name>.parquet`` on ``run_id``; returns the artifact path."""
    # Dictionary-encode only non-numeric columns: trying it on float columns with mostly
    # distinct values (the default) doubles the write time for the same file size.
    dictionary = [str(c) for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
        local = Path(tmp, f"{name}.parquet")
        df.to_parquet(local, index=False, use_dictionary=dictionary)
        client.log_artifact(run_id, str(local), FRAME_DIR)
    return frame_path(name)


def load_frame(run_id: str, name: str) -> pd.DataFrame:
    """Read dataset ``name`` from the artifacts of ``run_id``.

    Raises StageError when the run has no such artifact.
    """
    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=frame_path(name), dst_path=tmp
            )
        except (MlflowException, OSError) as exc:
            raise StageError(f"dataset '{name}' is not an artifact of run {run_id}: {exc}") from exc
        return pd.read_parquet(local)


def save_text(client: MlflowClient, run_id: str, artifact_path: str, text: str) -> str:
    """Log ``text`` as the artifact ``artifact_path`` (e.g. ``contract.yaml``) on ``run_id``."""
    path = Path(artifact_path)
    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
        local = Path(tmp, path.name)
        local.write_text(text, encoding="utf-8")
        parent = str(path.parent) if str(path.parent) != "." else None
        client.log_artifact(run_id, str(local), parent)
    return artifact_path


def load_text(run_id: str, artifact_path: str) -> str:
    """Read a text artifact of ``run_id``. Raises StageError when it is missing."""
    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=tmp
            )
        except (MlflowException, OSError) as exc:
            raise StageError(
                f"'{artifact_path}' is not an artifact of run {run_id}: {exc}"
            ) from exc
        return Path(local).read_text(encoding="utf-8")


def save_table(client: MlflowClient, run_id: str, artifact_path: str, df: pd.DataFrame) -> str:
    """Log a small table (e.g. a failure table) as CSV, readable in the MLflow UI."""
    return save_text(client, run_id, artifact_path, df.to_csv(index=False))


def pip_requirements() -> list[str]:
    """Exact versions of what a served model needs (inferring them costs ~6 s per model)."""
    from importlib.metadata import version

    packages = ["mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops", "pyarrow"]
    return [f"{name}=={version(name)}" for name in packages]


def log_model(model: object, input_example: pd.DataFrame) -> str:
    """Log a fitted sklearn model in the active run with a signature, an input example and
    exact pip requirements; returns its model URI.

    Saved with skops (no pickle); the exact types this model needs are recorded as trusted so
    it loads back, and nothing else does.
    """
    import mlflow.sklearn
    import skops.io
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, model.predict(input_example))
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements(),
        serialization_format="skops",
        skops_trusted_types=trusted,
    )
    return info.model_uri
