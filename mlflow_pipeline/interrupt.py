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


class _Count:
    """The SIGINTs of a ``watched`` block, as plain numbers rather than Events: the handler
    runs between any two bytecodes of the main thread, and setting an Event there while the
    main thread held that Event's lock (setting it too) would deadlock the process."""

    received = 0  # real SIGINTs taken in the block (not redeliveries)
    # How many of them a KeyboardInterrupt has stood for (raised, or an error it became
    # caught: ``acknowledge``); a block that ends with fewer raises it on the way out.
    raised = 0
    # The number of the SIGINT a redelivery is sending again (0: none). The handler drops it
    # when its Ctrl-C was raised meanwhile (a checkpoint got there first): it had raised a
    # second KeyboardInterrupt in the runner's clean-up, which left the pipeline run to
    # MLflow's exit handler, and that ended it FINISHED (CI, once). A second real Ctrl-C is a
    # new number: it is delivered.
    redelivered = 0


_count = _Count()
# Redeliveries not yet made, and the lock that orders them with the end of the block: a
# redelivery landing after the block restored the default handler raised KeyboardInterrupt
# in whatever ran next (an exit handler's store write, with a traceback; CI, once).
_redeliveries: list[threading.Timer] = []
_redelivery_lock = threading.Lock()
_watching = threading.Event()
# Modules in which an interrupt is delivered again later rather than raised: a store call.
STORE_MODULES = ("sqlalchemy", "sqlite3", "mlflow.store", "alembic", "psycopg2")
REDELIVER_S = 0.05
_active = threading.local()  # depth of nested ``watched`` blocks (a sweep's jobs in-process)


def requested() -> bool:
    """Did Ctrl-C come (while ``watched`` was active, or reported by ``remember``)?"""
    return _requested.is_set()


def interrupted_by(error: BaseException) -> bool:
    """Is ``error`` a Ctrl-C, or what a Ctrl-C became? A KeyboardInterrupt raised inside a
    library's ``try`` can be replaced by the error its ``finally`` raises (OmegaConf's, half
    way through a change: "'NoneType' object has no attribute '_invalidate_flags_cache'"), and
    a sweep job took that for a failure and the sweep went on to register (CI, once)."""
    return isinstance(error, KeyboardInterrupt) or _requested.is_set()


def acknowledge() -> None:
    """A requested Ctrl-C is being acted on (the error it became was caught): a redelivery
    still pending is dropped, and the ``watched`` block's end does not raise it again. Else a
    redelivery could raise in the clean-up that marks the runs KILLED."""
    if _requested.is_set():
        _count.raised = _count.received


def remember() -> None:
    """A KeyboardInterrupt that reached the command: ``requested`` says so from now on (the
    exit handlers mark what it stopped KILLED, not FAILED)."""
    _requested.set()


def checkpoint() -> None:
    """Raises KeyboardInterrupt if Ctrl-C came while ``watched`` was active."""
    if _requested.is_set():
        _count.raised = _count.received
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
    _count.received = _count.raised = _count.redelivered = 0
    _active.depth = 1
    _watching.set()
    previous_hook = sys.unraisablehook

    def on_sigint(signum: int, frame: Any) -> None:
        number, _count.redelivered = _count.redelivered, 0
        if number and _count.raised >= number:
            return  # the Ctrl-C it stood for has been raised already
        if not number:  # a real one
            _count.received += 1
            number = _count.received
        _requested.set()
        if callable(previous) and previous is not signal.default_int_handler:
            previous(signum, frame)  # someone else's handler: theirs to act on
        elif _in_store_call(frame):
            timer = threading.Timer(REDELIVER_S, _redeliver, args=(number,))
            timer.daemon = True
            _redeliveries.append(timer)
            timer.start()
        else:
            _count.raised = _count.received
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
        try:
            with _redelivery_lock:  # no redelivery after this: the handler it was for is gone
                _watching.clear()
                for timer in _redeliveries:
                    timer.cancel()
                _redeliveries.clear()
        finally:  # a redelivery taken while waiting for the lock raises, after these
            _active.depth = 0
            signal.signal(signal.SIGINT, previous)
            sys.unraisablehook = previous_hook
    if _count.received > _count.raised:
        # The block ended before a Ctrl-C it deferred (in a store call) was raised: raised
        # here, outside the store's code, rather than lost or raised in an exit handler.
        _count.raised = _count.received
        raise KeyboardInterrupt


def _redeliver(number: int) -> None:
    """SIGINT ``number`` to this process again, while a ``watched`` block is still there to
    take it and no KeyboardInterrupt has stood for it yet."""
    with _redelivery_lock:
        if _watching.is_set() and _count.raised < number:
            _count.redelivered = number
            os.kill(os.getpid(), signal.SIGINT)


def _in_store_call(frame: Any) -> bool:
    """Is the interrupted code, or any caller of it, the tracking store's?"""
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False
