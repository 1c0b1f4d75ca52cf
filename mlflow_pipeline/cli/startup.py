"""Process start-up and exit: the imports of a command (mlflow, pandas, Hydra, scikit-learn)
create ~1M objects that live as long as the process. Collecting them over and over while
importing, and once more at exit, costs about a second per command: freeze them instead
(objects made later are collected)."""

from __future__ import annotations

import atexit
import gc
import importlib
from collections.abc import Iterator
from contextlib import contextmanager

# What opening an embedded (SQLite) store imports: 0.7 s, worth importing with the rest.
SQL_STORE_MODULES = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
)


@contextmanager
def frozen_imports() -> Iterator[None]:
    """No garbage collection inside the block; what it created is frozen after it."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def preload(*modules: str) -> None:
    """Import ``modules`` now, inside ``frozen_imports``: the ones a command would import
    later, lazily, with the collector running over everything imported before them."""
    with frozen_imports():
        for name in modules:
            importlib.import_module(name)


def freeze_at_exit() -> None:
    """Freeze every object left when the process exits, so that the interpreter's last
    collection does not walk them (registered first, this handler runs after every other)."""
    atexit.register(gc.freeze)


def started_by_runner(args: list[str]) -> bool:
    """Whether ``python -m mlflow_pipeline.cli`` ``args`` are a stage entry point that
    runner=projects started (``<stage> ... --pipeline-run-id <id>``): the runner's process,
    interrupted by the same Ctrl-C, reports it for both."""
    if not args or args[0] in ("main", "score"):
        return False
    for i, arg in enumerate(args):
        if arg == "--pipeline-run-id":
            return i + 1 < len(args) and bool(args[i + 1])
        if arg.startswith("--pipeline-run-id="):
            return bool(arg.split("=", 1)[1])
    return False
