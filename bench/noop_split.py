"""Runs ``mlflow-pipeline ARGS`` in this process, charging every moment to one category.

    BENCH_SPLIT_OUT=split.json python bench/noop_split.py [Hydra overrides...]

Used by ``bench/run.py --cache`` on a no-op rerun. Wrappers around imports, the tracking and
registry store, the file digest, code hashing, package-version look-ups, git, Hydra's config
composition and artifact reads push a category while they run; time is charged to the innermost
category (exclusive), everything else to ``other``. The JSON written at the end holds the seconds
per category, the number of outermost calls per wrapped function, the harness's own span (from
this module's first line until the CLI returns) and its ``time.perf_counter()`` timestamps, with
the moment the atexit handlers were done, so the caller can place the interpreter's start and
exit.
Only this process is patched; no file of the package is changed.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import atexit  # noqa: E402  (after the clock starts: everything below is charged)
import builtins  # noqa: E402
import functools  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

IMPORTS = "imports"
STORE = "tracking store (queries and writes)"
STORE_OPEN = "tracking store: open (engine, schema check)"
REGISTRY = "model registry store"
FILE_HASH = "hashing data files (cache.file_digest)"
CODE_HASH = "hashing stage code (cache.code_hashes)"
PACKAGES = "package versions (cache.package_versions)"
GIT = "git commit / dirty check (subprocess)"
HYDRA = "Hydra config composition"
ARTIFACTS = "artifact reads and writes"
GC = "cyclic garbage collection (gc, during the run)"
OTHER = "other (Python between the above)"

seconds: dict[str, float] = defaultdict(float)
calls: Counter[str] = Counter()
_stack: list[str] = []
_charged_until = [STARTED]


def _charge(now: float) -> None:
    seconds[_stack[-1] if _stack else OTHER] += now - _charged_until[0]
    _charged_until[0] = now


@contextmanager
def category(name: str, label: str | None = None):
    _charge(time.perf_counter())
    if label and (not _stack or _stack[-1] != name):  # count outermost calls only
        calls[label] += 1
    _stack.append(name)
    try:
        yield
    finally:
        _charge(time.perf_counter())
        _stack.pop()


def timed(name: str, func: Callable, label: str | None = None) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with category(name, label):
            return func(*args, **kwargs)

    return wrapper


def wrap_methods(cls: type, name: str, prefix: str) -> None:
    """Every public method of ``cls`` (and its bases), and its constructor as STORE_OPEN."""
    for attr in dir(cls):
        if attr.startswith("_"):
            continue
        static = inspect.getattr_static(cls, attr)
        if isinstance(static, staticmethod | classmethod | property | type):
            continue
        if callable(static):
            setattr(cls, attr, timed(name, static, f"{prefix}.{attr}"))
    cls.__init__ = timed(STORE_OPEN, cls.__init__, f"{prefix}.__init__")


def lean_import(original: Callable) -> Callable:
    """``__import__`` runs for every import statement, even of a module loaded long ago (a
    dict look-up): keep the wrapper cheap, and charge nested imports to the outermost."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _stack and _stack[-1] is IMPORTS:
            return original(*args, **kwargs)
        now = time.perf_counter()
        _charge(now)
        _stack.append(IMPORTS)
        try:
            return original(*args, **kwargs)
        finally:
            _charge(time.perf_counter())
            _stack.pop()

    return wrapper


def _gc_phase(phase: str, info: dict) -> None:
    """A gc callback: a collection's time is its own category, wherever it interrupts."""
    now = time.perf_counter()
    _charge(now)
    if phase == "start":
        calls[f"gc.collect generation {info['generation']}"] += 1
        _stack.append(GC)
    elif _stack and _stack[-1] is GC:
        _stack.pop()


def install() -> None:
    gc.callbacks.append(_gc_phase)
    builtins.__import__ = lean_import(builtins.__import__)
    importlib.import_module = lean_import(importlib.import_module)
    with category(IMPORTS):
        import hydra._internal.config_loader_impl as loader
        import mlflow.artifacts
        import mlflow.store.model_registry.sqlalchemy_store as registry_store
        import mlflow.store.tracking.sqlalchemy_store as tracking_store

        from mlflow_pipeline.engine import cache
        from mlflow_pipeline.store import artifacts, tracking
    wrap_methods(tracking_store.SqlAlchemyStore, STORE, "store")
    wrap_methods(registry_store.SqlAlchemyStore, REGISTRY, "registry")
    cache.file_digest = timed(FILE_HASH, cache.file_digest, "cache.file_digest")
    cache.code_hashes = timed(CODE_HASH, cache.code_hashes, "cache.code_hashes")
    cache.package_versions = timed(PACKAGES, cache.package_versions, "cache.package_versions")
    tracking._git = timed(GIT, tracking._git, "git")
    loader.ConfigLoaderImpl.load_configuration = timed(
        HYDRA, loader.ConfigLoaderImpl.load_configuration, "hydra.load_configuration"
    )
    for module, attr in (
        (mlflow.artifacts, "load_text"),
        (artifacts, "save_text"),
        (artifacts, "load_text"),
        (artifacts, "load_frame"),
    ):
        setattr(module, attr, timed(ARTIFACTS, getattr(module, attr), f"{module.__name__}.{attr}"))


def _atexit_done(out: str) -> None:
    """Registered first, so it runs after every other atexit handler (MLflow's)."""
    done = time.perf_counter()
    with open(out, encoding="utf-8") as fh:
        result = json.load(fh)
    result["atexit_done_at"] = done
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)


def main() -> None:
    out = os.environ["BENCH_SPLIT_OUT"]
    atexit.register(_atexit_done, out)
    install()
    with category(IMPORTS):
        from mlflow_pipeline.cli.app import main as cli_main
    sys.argv = ["mlflow-pipeline", *sys.argv[1:]]
    try:
        cli_main()
    finally:
        ended = time.perf_counter()
        _charge(ended)
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "seconds": dict(seconds),
                    "calls": dict(calls),
                    "harness_s": ended - STARTED,
                    # time.perf_counter() values: CLOCK_MONOTONIC, comparable across processes
                    "started_at": STARTED,
                    "ended_at": ended,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
