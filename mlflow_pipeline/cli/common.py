"""How every command reports an expected failure: one paragraph on stderr, then exit 1; and an
interrupt (Ctrl-C): one line, exit 130."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mlflow.exceptions import MlflowException

from mlflow_pipeline import interrupt
from mlflow_pipeline.errors import PipelineError, StoreError
from mlflow_pipeline.redaction import redact_url
from mlflow_pipeline.store.tracking import describe_store_fault

# What the CLI reports as one paragraph and exit 1, without a traceback: our own errors, and
# MLflow refusing or failing to reach the store (bad URI, store down, unknown run id).
EXPECTED_ERRORS = (PipelineError, MlflowException)
INTERRUPTED = "mlflow-pipeline: interrupted; runs marked KILLED"
# The one log format (the Hydra app's is set to the same in conf/mlflow_pipeline.yaml).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# As a shell reports a process stopped by SIGINT.
INTERRUPTED_EXIT = 130
MLFLOW_DB_LOGGER = "mlflow.store.db.utils"


def store_fault(exc: BaseException) -> str | None:
    """The plain cause when ``exc`` is the tracking store failing (down, read-only, full,
    locked, missing directory), else None. Our own errors keep their message."""
    if isinstance(exc, PipelineError) and not isinstance(exc, StoreError):
        return None
    return describe_store_fault(exc)


def fail(exc: BaseException, prefix: str = "") -> None:
    """Print ``exc`` as the one-line error of a command (a store fault as its plain cause);
    ``prefix``: a sweep job's (``[job 2] ``), so that parallel jobs' errors say whose they are."""
    cause = store_fault(exc)
    if cause is not None:
        message = cause
    elif isinstance(exc, MlflowException):
        message = f"MLflow: {exc.message}"
    else:
        message = str(exc)
    print(f"{prefix}mlflow-pipeline: error: {redact_url(message)}", file=sys.stderr)


def job_prefix(job: int) -> str:
    """What each line of sweep job ``job`` starts with: parallel jobs interleave theirs."""
    return f"[job {job}] "


class JobLines(logging.Formatter):
    """A handler's own formatter, every line of its output (a traceback too) prefixed."""

    def __init__(self, inner: logging.Formatter, prefix: str) -> None:
        super().__init__()
        self.inner = inner
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return textwrap.indent(self.inner.format(record), self.prefix, lambda line: True)


def prefix_job_logs(job: int) -> None:
    """Prefix the lines of every handler of the root logger (as Hydra configured it for this
    job: console and log file) with ``[job N]``, keeping their format."""
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter()
        if isinstance(inner, JobLines):  # a process that runs several jobs
            inner = inner.inner
        handler.setFormatter(JobLines(inner, job_prefix(job)))


def exit_code(
    command: Callable[[], int | None],
    *,
    on_error: Callable[[BaseException], None] | None = None,
) -> int:
    """Run a subcommand's body: its exit code (None: 0). An expected error (EXPECTED_ERRORS)
    is printed as one line (``fail``), handed to ``on_error``, and is exit 1; anything else
    propagates."""
    try:
        code = command()
    except EXPECTED_ERRORS as exc:
        fail(exc)
        if on_error is not None:
            on_error(exc)
        return 1
    return 0 if code is None else code


@contextmanager
def reported(*, announce_interrupt: bool = True) -> Iterator[None]:
    """Around a whole command: Ctrl-C prints one line and exits 130 (the runs it interrupted
    are marked KILLED on the way out); a store fault that reached here as a foreign error
    prints its cause and exits 1. Anything else (a bug) keeps its traceback."""
    # MLflow logs every database error with its traceback before raising it: the error is
    # reported once, here, as one line.
    logging.getLogger(MLFLOW_DB_LOGGER).setLevel(logging.CRITICAL)
    try:
        yield
    except KeyboardInterrupt:
        interrupt.remember()
        if announce_interrupt:
            print(INTERRUPTED, file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT) from None
    except Exception as exc:
        if store_fault(exc) is None:
            raise
        fail(exc)
        raise SystemExit(1) from None
