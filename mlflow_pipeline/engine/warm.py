"""What a joblib sweep's worker process runs first, while the sweep's own process runs the
stages every job shares (engine/sweep.py): import the jobs' modules at the lowest priority.

The standard library only: a worker imports this module at its normal priority, to unpickle
the task, before it can lower it.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

# In the workers' meeting directory: the shared stages are done, import at full priority.
HURRY_FILE = ".hurry"
# ... and ``<pid>.started``: that worker has taken its warm-up task (``<pid>``: it is done).
STARTED = ".started"

# How long a warmed worker waits for the others to take their share (they start together).
WARM_MEETING_S = 60.0


def import_modules(modules: list[str], meeting: str, workers: int) -> int:
    """Import ``modules`` (in a sweep worker), then wait until ``workers`` workers have done
    so (a file each in the directory ``meeting``): a worker done first must not take another
    worker's share. Returns this process's id. A module that does not import is left to the
    job, which reports it.

    Where the priority can be restored (``may_restore_priority``), the imports run at
    ``nice`` 19 until ``HURRY_FILE`` appears in ``meeting``: the sweep's process runs the
    shared stages meanwhile, on one CPU, and the workers importing beside it at normal
    priority slowed it from 2.9 to 6.1 s (docs/benchmarks.md, sweeps)."""
    hurry = Path(meeting, HURRY_FILE)
    Path(meeting, f"{os.getpid()}{STARTED}").touch()
    with lowered_priority() as restore:
        for name in modules:
            if hurry.exists():
                restore()
            import_all([name])
    Path(meeting, str(os.getpid())).touch()
    deadline = time.monotonic() + WARM_MEETING_S
    while _arrived(meeting) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()


def _arrived(meeting: str) -> int:
    """How many workers have done their imports (a file named by its pid each)."""
    try:
        return sum(name.isdigit() for name in os.listdir(meeting))
    except OSError:  # the warm-up ended (the directory is gone)
        return sys.maxsize


def import_all(modules: list[str], stop: threading.Event | None = None) -> int:
    """Import ``modules`` in order until ``stop`` is set; returns how many were tried."""
    for tried, name in enumerate(modules):
        if stop is not None and stop.is_set():
            return tried
        try:
            importlib.import_module(name)
        except Exception:  # the importer of record imports it again and reports why
            continue
    return len(modules)


@contextmanager
def lowered_priority() -> Iterator[Callable[[], None]]:
    """This thread at ``nice`` 19 inside the block, where the priority can be restored
    (``may_restore_priority``); yields a function that restores it early. Restored on the
    way out in any case."""
    native_id = threading.get_native_id()
    before: int | None = None
    if may_restore_priority():
        try:
            before = os.getpriority(os.PRIO_PROCESS, native_id)
            os.setpriority(os.PRIO_PROCESS, native_id, 19)
        except OSError:  # a normal-priority thread then
            before = None

    def restore() -> None:
        nonlocal before
        if before is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, native_id, before)
            except OSError:  # checked before lowering it
                pass
            before = None

    try:
        yield restore
    finally:
        restore()


def may_restore_priority() -> bool:
    """Whether this process may raise a lowered priority back to 0 (root, or an RLIMIT_NICE
    of 20 or more): only then is a thread lowered, else a busy machine could starve a thread
    whose module lock the register run waits for. False where there are no such calls."""
    if not (hasattr(os, "setpriority") and hasattr(os, "geteuid")):
        return False
    if os.geteuid() == 0:
        return True
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    except (ImportError, AttributeError, ValueError, OSError):
        return False
    return soft == resource.RLIM_INFINITY or soft >= 20
