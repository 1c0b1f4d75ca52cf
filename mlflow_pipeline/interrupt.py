"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Inside a
weakref callback or a ``__del__`` (SQLAlchemy's, run by the garbage collector) it cannot
propagate: Python prints "Exception ignored in ..." with a traceback and the code goes on. A
pipeline run in CI did exactly that, then registered and promoted its model after Ctrl-C.

And inside the tracking store's code (SQLAlchemy, sqlite3, MLflow's store) an interrupt can
leave a connection with its write transaction open, referenced by the traceback's frames: the
writes that mark the runs KILLED then waited 20 s for SQLite's lock and failed ("database is
locked", exit 1), in CI again.

So, while ``watched`` is active, SIGINT is remembered; inside the store's code it is not raised
there but delivered again 50 ms later, until it lands outside; an interrupt swallowed by a
callback is not printed, and ``checkpoint`` (called at every stage boundary and before each
registry write) raises it again. The run stops as KILLED, with one line.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_requested = threading.Event()
# Modules in which an interrupt is delivered again later rather than raised: a store call.
STORE_MODULES = ("sqlalchemy", "sqlite3", "mlflow.store", "alembic", "psycopg2")
REDELIVER_S = 0.05
_active = threading.local()  # depth of nested ``watched`` blocks (a sweep's jobs in-process)


def requested() -> bool:
    """Did Ctrl-C come (while ``watched`` was active, or reported by ``remember``)?"""
    return _requested.is_set()


def remember() -> None:
    """A KeyboardInterrupt that reached the command: ``requested`` says so from now on (the
    exit handlers mark what it stopped KILLED, not FAILED)."""
    _requested.set()


def checkpoint() -> None:
    """Raises KeyboardInterrupt if Ctrl-C came while ``watched`` was active."""
    if _requested.is_set():
        raise KeyboardInterrupt


@contextmanager
def watched() -> Iterator[None]:
    """SIGINT remembered inside the block (main thread only; an ignored SIGINT stays ignored)."""
    previous = signal.getsignal(signal.SIGINT)
    nested = getattr(_active, "depth", 0) > 0
    if (
        nested
        or threading.current_thread() is not threading.main_thread()
        or (previous == signal.SIG_IGN)
    ):
        yield
        return
    _requested.clear()
    _active.depth = 1
    previous_hook = sys.unraisablehook

    def on_sigint(signum: int, frame: Any) -> None:
        _requested.set()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)  # someone else's handler: theirs to act on
        elif _in_store_call(frame):
            timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
        else:
            raise KeyboardInterrupt

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt) and _requested.is_set():
            return  # raised again at the next checkpoint
        previous_hook(info)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        _active.depth = 0
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = previous_hook


def _in_store_call(frame: Any) -> bool:
    """Is the interrupted code, or any caller of it, the tracking store's?"""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False
