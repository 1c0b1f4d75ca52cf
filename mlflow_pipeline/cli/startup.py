"""Process start-up: the imports of a command (mlflow, pandas, Hydra) create ~1M objects that
live as long as the process. Collecting them over and over while importing, and once more at
exit, costs about a second per command: freeze them instead (objects made later are
collected)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_imports() -> Iterator[None]:
    """No garbage collection inside the block; what it created is frozen after it."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
