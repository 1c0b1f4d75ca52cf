"""Stage datasets as run artifacts: parquet frames and text files, with content digests; and
models, logged with skops and loaded back only when their format is one we trust."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_pipeline.errors import StageError, UntrustedModelError

FRAME_DIR = "data"
# A frame written in place is data/.<name>.parquet.<pid>.partial until it is whole.
PARTIAL_SUFFIX = ".partial"
# The types our own models need that skops does not trust by default: skops.io.get_untrusted_types
# of every conf/model x conf/features option, for both tasks (tests/store/test_artifacts.py
# recomputes it). The list is ours: never the one a model's MLmodel file carries, which whoever
# wrote the artifact chose.
TRUSTED_TYPES = frozenset(
    {
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "mlflow_pipeline.stages.features.DatetimeFeatures",
        "mlflow_pipeline.stages.features.FilledText",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.tree._tree.Tree",
    }
)
SKLEARN_FLAVOR = "sklearn"
PYFUNC_FLAVOR = "python_function"
SKOPS = "skops"
UNSAFE_HINT = (
    "set registry.allow_unsafe_models=true (or --allow-unsafe-model) only if you trust everyone "
    "who can write to this registry and its artifacts"
)


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
    local_root = _local_artifact_dir(client, run_id)
    if local_root is None:  # a server, S3, ...: written here, then uploaded
        with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
            local = Path(tmp, f"{name}.parquet")
            df.to_parquet(local, index=False, use_dictionary=dictionary)
            client.log_artifact(run_id, str(local), FRAME_DIR)
        return frame_path(name)
    # Artifacts on a local disk: written in place, not written once and copied (1.4 s of a
    # 1M-row run), under a temporary name renamed when complete: a file named
    # data/<name>.parquet is always whole, even after a kill or a full disk.
    final = local_root / frame_path(name)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    try:
        df.to_parquet(partial, index=False, use_dictionary=dictionary)
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)
    return frame_path(name)


def save_frame_digested(client: MlflowClient, run_id: str, name: str, df: pd.DataFrame) -> str:
    """``save_frame`` and ``digest(df)`` at once; returns the digest. pyarrow's writer and
    pandas' hashing both run mostly without the GIL: 1.0 s -> 0.65 s for a 1M x 33 frame."""
    with ThreadPoolExecutor(1, thread_name_prefix="digest") as pool:
        digested = pool.submit(digest, df)
        save_frame(client, run_id, name, df)
        return digested.result()


def remove_partial_frames(artifact_uri: str, pid: str) -> list[Path]:
    """Remove the files ``save_frame`` left half-written in a run's artifacts when process
    ``pid`` was killed while writing them (named after the writer's pid; a killed process
    never reaches its clean-up). Returns them. Only files, and only on a local disk
    (``file:`` or a path; elsewhere frames are uploaded whole). Called once per dead run, when
    it is marked FAILED: a file kept then would never be looked at again."""
    if urlsplit(artifact_uri).scheme not in ("", "file") or not pid.isdigit():
        return []
    local_root = _local_dir(artifact_uri)
    frames = local_root / FRAME_DIR if local_root is not None else None
    if frames is None or not frames.is_dir():
        return []
    removed = []
    for path in sorted(frames.glob(f".*.{pid}{PARTIAL_SUFFIX}")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _local_artifact_dir(client: MlflowClient, run_id: str) -> Path | None:
    """The directory of ``run_id``'s artifacts when they are on a local disk, else None."""
    return _local_dir(client.get_run(run_id).info.artifact_uri)


def _local_dir(artifact_uri: str) -> Path | None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    repo = get_artifact_repository(artifact_uri)
    return Path(repo.artifact_dir) if isinstance(repo, LocalArtifactRepository) else None


def load_frame(run_id: str, name: str) -> pd.DataFrame:
    """Read dataset ``name`` from the artifacts of ``run_id``.

    Raises StageError when the run has no such artifact or it cannot be read.
    """
    try:
        local_root = _local_artifact_dir(MlflowClient(), run_id)
        if local_root is not None:  # on a local disk: read in place, not copied first
            return pd.read_parquet(local_root / frame_path(name))
        with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=frame_path(name), dst_path=tmp
            )
            return pd.read_parquet(local)
    except (MlflowException, FileNotFoundError) as exc:
        raise StageError(f"dataset '{name}' is not an artifact of run {run_id}: {exc}") from exc
    except OSError as exc:  # there, but unreadable (permissions, I/O error)
        raise StageError(f"dataset '{name}' of run {run_id} cannot be read: {exc}") from exc


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


# What a served model needs: distribution -> the module it installs.
MODEL_PACKAGES = {
    "mlflow": "mlflow",
    "scikit-learn": "sklearn",
    "pandas": "pandas",
    "numpy": "numpy",
    "scipy": "scipy",
    "skops": "skops",
    "pyarrow": "pyarrow",
}


def pip_requirements() -> list[str]:
    """Exact versions of what a served model needs (inferring them costs ~6 s per model)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_PACKAGES]


@contextlib.contextmanager
def _requirement_check_of_model_packages() -> Iterator[None]:
    """Let MLflow's check of a logged model's requirements map only MODEL_PACKAGES.

    Before it compares each requirement with the installed version, MLflow maps every installed
    distribution to its modules (importlib's ``packages_distributions``, ~1.8 s here, paid by
    every model logged). Our requirements are the installed versions of MODEL_PACKAGES, so the
    check needs their map only. It is put in MLflow's cache for the call and taken out after:
    anything else in this process that needs the whole map still builds it.
    """
    from mlflow.utils import requirements_utils

    if requirements_utils._MODULES_TO_PACKAGES is not None:  # built already: nothing to save
        yield
        return
    requirements_utils._MODULES_TO_PACKAGES = {
        module: [package] for package, module in MODEL_PACKAGES.items()
    }
    try:
        yield
    finally:
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None


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
    with _requirement_check_of_model_packages():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(),
            serialization_format="skops",
            skops_trusted_types=trusted,
            # The project's own classes in the model (a transformer from its src/) travel with it:
            # it then loads and serves from any directory, without the project's checkout.
            code_paths=project_code_paths(model) or None,
        )
    return info.model_uri


def project_code_paths(model: object) -> list[str]:
    """The directories of the project's own packages whose classes ``model`` holds (estimators
    and transformers, nested ones included): packages under the project root, not installed."""
    from mlflow_pipeline.config import PROJECT_ROOT

    root = PROJECT_ROOT.resolve()
    paths: set[str] = set()
    for obj in _parts(model):
        top = type(obj).__module__.split(".")[0]
        module = sys.modules.get(top)
        location = getattr(module, "__file__", None)
        if not location or top == "mlflow_pipeline":
            continue
        package_dir = Path(location).resolve().parent
        if package_dir.is_relative_to(root) and ".venv" not in package_dir.parts:
            paths.add(str(package_dir))
    return sorted(paths)


def _parts(model: object, depth: int = 0) -> list[object]:
    """``model`` and every estimator inside it (Pipeline steps, ColumnTransformer parts)."""
    found = [model]
    if depth > 10:
        return found
    for attribute in ("steps", "transformers", "transformers_"):
        for item in getattr(model, attribute, None) or []:
            if isinstance(item, tuple) and len(item) >= 2:
                found += _parts(item[1], depth + 1)
    return found


def load_trusted_model(model_uri: str, *, allow_unsafe: bool = False) -> Any:
    """The scikit-learn model at ``model_uri`` (``models:/NAME/VERSION``, ``runs:/...``, a path),
    loaded without running code from the artifact: only a skops file whose types are all
    trusted by skops or on TRUSTED_TYPES (see ``check_trusted_model``). With ``allow_unsafe``
    anything MLflow's sklearn flavor loads is loaded (pickle included).

    Raises UntrustedModelError naming the model and what is untrusted; MlflowException when
    the model cannot be downloaded.
    """
    import mlflow.sklearn
    import skops.io

    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        if allow_unsafe:
            return mlflow.sklearn.load_model(str(local))
        path, types = check_trusted_model(local, model_uri)
        from mlflow_pipeline.config import use_project_code

        use_project_code()  # the project's own classes, from its src/
        return skops.io.load(path, trusted=sorted(types))


def project_packages() -> set[str]:
    """The top-level packages of the project this process runs in (``<root>/src/<name>``)."""
    from mlflow_pipeline.config import PROJECT_ROOT

    src = PROJECT_ROOT / "src"
    if not src.is_dir():
        return set()
    return {p.name for p in src.iterdir() if (p / "__init__.py").is_file()}


def _only_project_code(code_dir: Path, own: set[str]) -> bool:
    """Is every entry of a model's code directory one of the project's own packages?"""
    if not code_dir.is_dir():
        return False
    entries = {p.name for p in code_dir.iterdir() if p.name != "__pycache__"}
    return bool(entries) and entries <= own


def trusted_model_copy(model_uri: str, dst: str | Path, *, allow_unsafe: bool = False) -> Path:
    """Download the model at ``model_uri`` into ``dst`` and check it (``check_trusted_model``,
    unless ``allow_unsafe``); returns the local model directory, which is what should then be
    served (the checked copy, not a second download). Raises UntrustedModelError."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    if not allow_unsafe:
        check_trusted_model(local, model_uri)
        _with_project_code(local)
    return local


def _with_project_code(local: Path) -> None:
    """Replace the code a checked model copy carries (the project's packages, as logged) with
    the project's own ``src/`` packages: the server imports what is on this machine, never
    code from the artifact."""
    from mlflow.models import Model

    from mlflow_pipeline.config import PROJECT_ROOT

    code = (Model.load(str(local)).flavors.get(PYFUNC_FLAVOR) or {}).get("code")
    if not code:
        return
    for entry in (local / str(code)).iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        own = PROJECT_ROOT / "src" / entry.name
        if own.is_dir():
            shutil.copytree(own, entry, ignore=shutil.ignore_patterns("__pycache__"))


def check_trusted_model(local: Path, model_uri: str) -> tuple[Path, set[str]]:
    """Check a downloaded model directory without loading it: an MLflow sklearn model saved
    with skops, served by MLflow's own sklearn loader (no custom code), whose skops file needs
    no type beyond skops' defaults and TRUSTED_TYPES. Returns the skops file and the types to
    pass to ``skops.io.load``.

    Raises UntrustedModelError naming ``model_uri`` and what is untrusted.
    """
    import skops.io
    from mlflow.models import Model

    def refuse(why: str) -> UntrustedModelError:
        return UntrustedModelError(
            f"refusing to load the model {model_uri}: {why}. mlflow-pipeline loads only "
            "scikit-learn models saved with skops whose types are on its trusted list; "
            + UNSAFE_HINT
        )

    try:
        flavors = Model.load(str(local)).flavors
    except Exception as exc:  # no or malformed MLmodel file
        raise refuse(f"it has no readable MLmodel file ({exc})") from exc
    sklearn_conf = flavors.get(SKLEARN_FLAVOR)
    if sklearn_conf is None:
        raise refuse(f"it is not a scikit-learn model (flavors: {', '.join(sorted(flavors))})")
    serialization = sklearn_conf.get("serialization_format", "pickle")
    if serialization != SKOPS:
        raise refuse(
            f"it is serialized with {serialization}, which runs any code the file holds when "
            "it is loaded"
        )
    pyfunc = flavors.get(PYFUNC_FLAVOR) or {}
    own = project_packages()
    code = local / str(pyfunc.get("code") or "")
    carried = (
        sorted(p.name for p in code.iterdir() if p.name != "__pycache__")
        if (pyfunc.get("code") and code.is_dir())
        else []
    )
    if (
        carried
        and pyfunc.get("loader_module") == "mlflow.sklearn"
        and pyfunc.get("model_path") == sklearn_conf.get("pickled_model")
        and not set(carried) <= own
    ):
        from mlflow_pipeline.config import PROJECT_ROOT

        missing = ", ".join(sorted(set(carried) - own))
        raise UntrustedModelError(
            f"the model {model_uri} was trained by a project with its own code (package(s) "
            f"{missing}), which the project here ({PROJECT_ROOT}) does not have: run this "
            "inside the project that trained it, whose src/ holds that code. The code logged "
            "with the model is not run; to run it anyway, " + UNSAFE_HINT
        )
    if pyfunc and (
        pyfunc.get("loader_module") != "mlflow.sklearn"
        or (pyfunc.get("code") and not _only_project_code(local / str(pyfunc["code"]), own))
        or pyfunc.get("model_path") != sklearn_conf.get("pickled_model")
    ):
        raise refuse(
            "its python_function flavor does not load it with mlflow.sklearn alone "
            f"(loader_module {pyfunc.get('loader_module')!r}, code {pyfunc.get('code')!r})"
        )
    path = (local / str(sklearn_conf.get("pickled_model", ""))).resolve()
    if not path.is_file() or not path.is_relative_to(local.resolve()):
        raise refuse(f"its model file {sklearn_conf.get('pickled_model')!r} is not in the model")
    try:
        types = set(skops.io.get_untrusted_types(file=path))
    except Exception as exc:  # not a skops file at all
        raise refuse(f"its model file is not a readable skops file ({exc})") from exc
    # The project's own classes are trusted as its own code is: imported from its src/, never
    # from the artifact (which is not put on sys.path here).
    outside = sorted(t for t in types - TRUSTED_TYPES if t.split(".")[0] not in own)
    if outside:
        raise refuse(f"its skops file needs types outside the trusted list: {', '.join(outside)}")
    return path, types
