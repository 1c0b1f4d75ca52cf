"""The content digest of a logged model: two models with the same digest are the same model,
and the registry holds it once (recorded on each version as ``Registry.CONTENT_DIGEST``).

What it covers: every file of the logged model's directory (MLmodel, the serialized model,
the environment files, the input example and signature), by relative path, with two
normalisations that remove what differs between two loggings of the very same model:

- ``MLmodel``: the fields naming the logging, not the model, are left out: ``run_id``,
  ``model_id``, ``model_uuid``, ``artifact_path``, ``utc_time_created`` and
  ``model_size_bytes`` (the size of a zip whose member names differ, see below). The rest
  (flavors, signature, trusted types, versions of Python, MLflow and scikit-learn) counts.
- ``*.skops`` files: skops names the arrays it stores, and refers to shared objects, by
  Python's ``id()`` of each object at save time, so the same model saved twice gives
  different bytes. The digest renumbers those ids and array files in their order in the
  schema (object structure and array bytes unchanged), which is the same for the same model.
  Attributes in which scikit-learn itself keeps an ``id()`` (``PROCESS_IDS``: a text
  vectorizer's ``_stop_words_id``, a cache marker that never matches after loading) count as
  present, not by value.

``registered_model_meta`` (written by MLflow when a model is registered) is not content.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

PREFIX = "sha256:"
# MLmodel fields that name one logging of a model (its run, id, time, place), not the model.
# Tuples, not sets: a set's order (and so its repr, which the stage cache fingerprints) changes
# from one process to the next.
LOGGING_FIELDS = (
    "artifact_path",
    "model_id",
    "model_size_bytes",
    "model_uuid",
    "run_id",
    "utc_time_created",
)
NOT_CONTENT = ("registered_model_meta",)
# Fitted attributes holding a Python id() (different in every process): CountVectorizer's and
# TfidfVectorizer's check that their stop words were validated already.
PROCESS_IDS = ("_stop_words_id",)


def content_digest(model_uri: str) -> str:
    """``sha256:<hex>`` of the model at ``model_uri`` (``models:/...`` or ``runs:/...``),
    downloaded through the active tracking store. Raises MlflowException when it cannot be
    read."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="model-digest-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return directory_digest(Path(local))


def directory_digest(root: Path) -> str:
    """``sha256:<hex>`` of a logged model's directory (see the module's docstring)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    total = hashlib.sha256()
    for path in files:
        relative = path.relative_to(root).as_posix()
        if relative in NOT_CONTENT:
            continue
        total.update(f"{relative}\0{_file_digest(path)}\n".encode())
    return PREFIX + total.hexdigest()


def _file_digest(path: Path) -> str:
    if path.name == "MLmodel":
        fields = yaml.safe_load(path.read_text("utf-8")) or {}
        kept = {k: v for k, v in fields.items() if k not in LOGGING_FIELDS}
        return _sha(json.dumps(kept, sort_keys=True, default=str).encode())
    if path.suffix == ".skops" and zipfile.is_zipfile(path):
        return skops_digest(path)
    return _sha(path.read_bytes())


def skops_digest(path: Path) -> str:
    """The digest of a skops file's content, independent of the ``id()`` values skops names
    objects and array files by (the schema walked in a fixed order, ids renumbered)."""
    with zipfile.ZipFile(path) as archive:
        schema = json.loads(archive.read("schema.json"))
        ids: dict[Any, int] = {}
        files: dict[str, str] = {}

        def canonical(node: Any) -> Any:
            if isinstance(node, list):
                return [canonical(item) for item in node]
            if not isinstance(node, dict):
                return node
            out = {}
            for key in sorted(node):
                value = node[key]
                if key == "__id__":
                    value = ids.setdefault(value, len(ids))
                elif key in PROCESS_IDS and isinstance(value, dict) and "content" in value:
                    value = canonical({**value, "content": "id()"})
                elif key == "file" and isinstance(value, str):
                    value = files.setdefault(value, f"{len(files)}{Path(value).suffix}")
                else:
                    value = canonical(value)
                out[key] = value
            return out

        total = hashlib.sha256(json.dumps(canonical(schema), sort_keys=True).encode())
        for original, renamed in files.items():
            total.update(f"\0{renamed}\0".encode())
            total.update(archive.read(original))
        for name in sorted(set(archive.namelist()) - set(files) - {"schema.json"}):
            total.update(f"\0{name}\0".encode())
            total.update(archive.read(name))
    return total.hexdigest()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
