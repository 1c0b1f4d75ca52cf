"""The no-op fast path: a rerun that every stage would answer from the cache is recognised
before MLflow, pandas and scikit-learn are imported, and runs nothing.

A plain pipeline run (no sweep, not inside ``mlflow run``) that ends with every stage stored
and nothing changed that the next run's cache keys read (``engine.stage`` re-resolves each
stage's Context: the champion, alias moves) writes a *stamp* beside its SQLite store:
``<store dir>/.mlflow_pipeline/noop/<key>.json``, where ``key`` hashes the resolved
config and the environment variables that choose the store and experiment. The stamp holds
what else the cache keys depend on, as cheap file facts: size, modification time, inode and
change time of the package's and the project's code and config files, of every file a
stage's ``file_keys`` name, the versions of the packages stages declare, and of the SQLite
store itself, taken after the run's last write.

The next run with the same config finds the stamp; when every fact is unchanged (so no other
run wrote to the store, no file was touched), it prints that and exits, as ``dvc repro``
does. Anything different, or any doubt (a server store, a file gone, a stamp unreadable),
takes the normal path, whose cache decisions are exact. ``cache.fast_noop=false`` turns it
off, so that every run records a pipeline run of cache hits.

Only the standard library, OmegaConf and our config module are imported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import PROJECT_ROOT

STAMP_DIR = Path(".mlflow_pipeline") / "noop"
STAMP_FORMAT = 2
# Environment variables that change which store or experiment a run uses.
STORE_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
# Packages every stage's results depend on, besides those stages declare (Stage.packages).
BASE_PACKAGES = ("mlflow", "pandas", "numpy", "pandera", "omegaconf", "hydra-core")
PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The project's own code and config, as far as a stage can read them.
PROJECT_DIRS = ("conf", "src")
CODE_SUFFIXES = (".py", ".yaml", ".yml")


@dataclass(frozen=True)
class Stamp:
    """What a fast no-op found: the run it stands for and when that run ended."""

    pipeline_run_id: str
    experiment_id: str
    ended: float
    path: Path

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ended))
        return (
            f"nothing to do: config, code, data and store are as pipeline run "
            f"{self.pipeline_run_id} (experiment {self.experiment_id}, {when}) left them, so "
            "every stage would be a cache hit; nothing ran and nothing was recorded "
            "(cache.fast_noop=false records a run of cache hits)"
        )


def store_of(cfg: DictConfig) -> Path | None:
    """The SQLite file ``cfg`` tracks to, as store.tracking.resolve_tracking finds it (None:
    another kind of store, which has no fast path)."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return Path(cfg.tracking.root or PROJECT_ROOT).resolve() / "mlflow.db"
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]).resolve() if uri.startswith(prefix) else None


def stamp_path(cfg: DictConfig) -> Path | None:
    """Where the stamp for ``cfg`` (resolved) lives: beside its SQLite store; None without one."""
    store = store_of(cfg)
    if store is None:
        return None
    body = OmegaConf.to_container(cfg, resolve=True)
    env = {name: os.environ.get(name) for name in STORE_ENV}
    text = json.dumps([body, env], sort_keys=True, default=str)
    return store.parent / STAMP_DIR / f"{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


def _stat(path: Path) -> list[int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    # The change time and inode too: a copy that keeps the modification time (cp -p, rsync -t)
    # or a same-sized edit with the time put back leaves size and mtime as they were.
    return [found.st_size, found.st_mtime_ns, found.st_ino, found.st_ctime_ns]


def _tree(root: Path) -> dict[str, list[int] | None]:
    if root.is_file():
        return {str(root): _stat(root)}
    if not root.is_dir():
        return {str(root): None}
    return {
        str(p): _stat(p)
        for p in sorted(root.rglob("*"))
        if p.suffix in CODE_SUFFIXES and "__pycache__" not in p.parts
    }


def _data_files(cfg: DictConfig) -> dict[str, Any]:
    """Stat of every file (or directory's files) a stage's ``file_keys`` name."""
    found: dict[str, Any] = {}
    for stage in (OmegaConf.select(cfg, "pipeline.stages") or {}).values():
        for key in stage.get("file_keys", None) or ():
            value = OmegaConf.select(cfg, key)
            if not value or "://" in str(value):
                continue
            path = Path(str(value))
            path = path if path.is_absolute() else PROJECT_ROOT / path
            if path.is_dir():
                found.update({str(p): _stat(p) for p in sorted(path.rglob("*")) if p.is_file()})
            else:
                found[str(path)] = _stat(path)
    return found


def _versions(cfg: DictConfig) -> dict[str, str | None]:
    names = set(BASE_PACKAGES)
    for stage in (OmegaConf.select(cfg, "pipeline.stages") or {}).values():
        names.update(stage.get("packages", None) or ())
    versions: dict[str, str | None] = {}
    for name in sorted(names):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def facts(cfg: DictConfig, store: Path) -> dict[str, Any]:
    """Everything besides the config a stamp must find unchanged."""
    code: dict[str, Any] = _tree(PACKAGE_DIR)
    for name in PROJECT_DIRS:
        code.update(_tree(PROJECT_ROOT / name))
    return {
        "code": code,
        "data": _data_files(cfg),
        "packages": _versions(cfg),
        "store": {str(store): _stat(store), f"{store}-wal": _stat(Path(f"{store}-wal"))},
    }


def write_stamp(cfg: DictConfig, pipeline_run_id: str, experiment_id: str, path: Path) -> None:
    """Record at ``path`` (``stamp_path`` of the config as the run started) that a rerun of
    ``cfg`` would be all cache hits; call it after the run's last write to the store."""
    store = store_of(cfg)
    if store is None:
        return
    stamp = {
        "format": STAMP_FORMAT,
        "pipeline_run_id": pipeline_run_id,
        "experiment_id": experiment_id,
        "ended": time.time(),
        "store": str(store),
        "facts": facts(cfg, store),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp, sort_keys=True))
    tmp.replace(path)


def find_noop(cfg: DictConfig) -> Stamp | None:
    """The stamp that makes a run of ``cfg`` a no-op, or None (run normally)."""
    if not OmegaConf.select(cfg, "cache.fast_noop", default=False):
        return None
    if OmegaConf.select(cfg, "cache.policy") != "use" or OmegaConf.select(cfg, "cache.stages"):
        return None
    path = stamp_path(cfg)
    if path is None:
        return None
    try:
        stamp = json.loads(path.read_text())
        if stamp.get("format") != STAMP_FORMAT:
            return None
        store = Path(stamp["store"])
        if store != store_of(cfg) or facts(cfg, store) != stamp["facts"]:
            return None
        return Stamp(stamp["pipeline_run_id"], stamp["experiment_id"], stamp["ended"], path)
    except (OSError, ValueError, KeyError, TypeError):
        return None
