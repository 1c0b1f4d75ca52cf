"""The one error tree: every expected failure is a PipelineError with a readable message.

The CLI turns a PipelineError into one paragraph and a non-zero exit; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class PipelineError(Exception):
    """Root of every expected failure. ``stage`` names the stage it happened in, if any."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage

    def __str__(self) -> str:
        message = super().__str__()
        if self.stage and not message.startswith(f"[{self.stage}]"):
            return f"[{self.stage}] {message}"
        return message


class ConfigError(PipelineError):
    """The composed configuration is invalid (unknown key or option, missing value, bad value)."""


class DataError(PipelineError):
    """Input data cannot be read at all (missing file, unreadable format, empty)."""


class DataValidationError(PipelineError):
    """A pandera gate rejected a dataset. ``failure_cases`` is the full failure table."""

    def __init__(
        self,
        message: str,
        *,
        stage: str | None,
        dataset: str,
        failure_cases: pd.DataFrame,
        report: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, stage=stage)
        self.dataset = dataset
        self.failure_cases = failure_cases
        # The validation report's data (every check and its status), when a gate knows it.
        self.report = report


class DriftError(PipelineError):
    """Today's data drifted from the champion's training data and the policy is ``fail``
    (or its columns changed). ``drift`` is the drift result."""

    def __init__(self, message: str, *, stage: str | None, drift: dict[str, Any]) -> None:
        super().__init__(message, stage=stage)
        self.drift = drift


class StageError(PipelineError):
    """A stage could not run: its inputs are missing or its function failed in an expected way."""


class ThresholdError(PipelineError):
    """A model metric missed a threshold from ``conf/evaluation``; nothing is registered."""


class RegistryError(PipelineError):
    """The model registry refused an operation or holds something unexpected."""


class StoreError(PipelineError):
    """The tracking store cannot be reached, opened or written (down, read-only, full, locked);
    the message names the store and the cause in one line."""


class UntrustedModelError(PipelineError):
    """A model artifact is in a format that could run code when loaded (pickle, another
    flavor, skops types outside our trusted list) and unsafe loading was not allowed."""
