"""How every command reports an expected failure: one paragraph on stderr, then exit 1."""

from __future__ import annotations

import sys

from mlflow.exceptions import MlflowException

from mlflow_pipeline.errors import PipelineError

# What the CLI reports as one paragraph and exit 1, without a traceback: our own errors, and
# MLflow refusing or failing to reach the store (bad URI, store down, unknown run id).
EXPECTED_ERRORS = (PipelineError, MlflowException)


def fail(exc: BaseException) -> None:
    """Print ``exc`` as the one-line error of a command."""
    message = exc.message if isinstance(exc, MlflowException) else str(exc)
    prefix = "MLflow: " if isinstance(exc, MlflowException) else ""
    print(f"mlflow-pipeline: error: {prefix}{message}", file=sys.stderr)
