"""Feature transformers of our own, fitted inside the model's Pipeline so that serving applies
what training fitted: the parts of a date as numbers, and a free-text column made ready for
TF-IDF. Both load back through skops (their types are on store.artifacts.TRUSTED_TYPES)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from mlflow_pipeline.dates import day_first

# What a date becomes, by part name; "elapsed" is days since the earliest training date.
DATETIME_PARTS = ("year", "quarter", "month", "day", "dayofweek", "dayofyear", "hour", "elapsed")
DEFAULT_DATETIME_PARTS = ("year", "month", "dayofweek", "dayofyear", "elapsed")
# The pandas accessor of each part that has one under another name.
ACCESSOR = {"dayofweek": "day_of_week", "dayofyear": "day_of_year"}
SECONDS_PER_DAY = 86_400.0
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def parse_dates(values: pd.Series, dayfirst: bool | None = None) -> pd.Series:
    """``values`` (text, datetime64 or datetime objects) as UTC timestamps; missing and
    unparseable values become NaT.

    One format inferred from the values first (fast); the values that do not follow it are
    parsed one by one (``format="mixed"``). Text that is a plain number stays NaT: a parser
    would read "12" as a day of the current month. ``dayfirst``: how ``02.01.2014`` reads
    (None: as ``dates.day_first`` finds it in ``values``, month-first when they do not
    tell).
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    if dayfirst is None:
        dayfirst = bool(day_first(values))
    with warnings.catch_warnings():  # "could not infer format": the retry below is the answer
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(values, errors="coerce", utc=True, dayfirst=dayfirst)
    retry = parsed.isna() & values.notna()
    if retry.any():
        text = values[retry].astype(str)
        number = pd.to_numeric(text, errors="coerce").notna()
        text = text[~number]
        if len(text):
            parsed.loc[text.index] = pd.to_datetime(
                text, errors="coerce", utc=True, format="mixed", dayfirst=dayfirst
            )
    return parsed


def _columns(X: Any) -> tuple[list[str], list[pd.Series]]:
    """The columns of ``X`` (a DataFrame, a Series or an array) as Series, with their names."""
    if isinstance(X, pd.Series):
        return [str(X.name)], [X.reset_index(drop=True)]
    if isinstance(X, pd.DataFrame):
        return [str(c) for c in X.columns], [
            X.iloc[:, i].reset_index(drop=True) for i in range(X.shape[1])
        ]
    array = np.asarray(X, dtype=object)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    return [f"x{i}" for i in range(array.shape[1])], [
        pd.Series(array[:, i]) for i in range(array.shape[1])
    ]


class DatetimeFeatures(TransformerMixin, BaseEstimator):
    """Each date column as numbers: the chosen ``parts`` of DATETIME_PARTS, in that order per
    column; a missing or unparseable date gives NaN in every part (impute after this step).

    ``elapsed`` is days since the earliest date of each column seen in fit (NaN for a column
    with no date in training).
    """

    def __init__(self, parts: Sequence[str] = DEFAULT_DATETIME_PARTS) -> None:
        self.parts = parts

    def fit(self, X: Any, y: Any = None) -> DatetimeFeatures:
        unknown = [p for p in self.parts if p not in DATETIME_PARTS]
        if unknown or not len(self.parts):
            raise ValueError(
                f"DatetimeFeatures parts must be some of {', '.join(DATETIME_PARTS)}; got "
                f"{list(self.parts)}"
            )
        names, columns = _columns(X)
        if isinstance(X, pd.DataFrame):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        self.n_features_in_ = len(columns)
        # Which way round each column writes its dates, as training saw it: a request of one
        # row (05.01.2014) cannot tell.
        self.dayfirst_ = [bool(day_first(c)) for c in columns]
        self.reference_ = np.array(
            [_earliest(parse_dates(c, d)) for c, d in zip(columns, self.dayfirst_, strict=True)],
            dtype="float64",
        )
        return self

    def transform(self, X: Any) -> np.ndarray:
        _, columns = _columns(X)
        if len(columns) != self.n_features_in_:
            raise ValueError(
                f"DatetimeFeatures was fitted on {self.n_features_in_} column(s), got "
                f"{len(columns)}"
            )
        blocks = []
        dayfirst = getattr(self, "dayfirst_", None) or [None] * len(columns)  # older models
        for column, reference, first in zip(columns, self.reference_, dayfirst, strict=True):
            dates = parse_dates(column, first)
            for part in self.parts:
                if part == "elapsed":
                    values = (_seconds(dates) - reference) / SECONDS_PER_DAY
                else:
                    values = getattr(dates.dt, ACCESSOR.get(part, part))
                    values = values.to_numpy(dtype="float64", na_value=np.nan)
                blocks.append(np.asarray(values, dtype="float64"))
        return np.column_stack(blocks) if blocks else np.empty((len(columns[0]), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = getattr(self, "feature_names_in_", None)
        if input_features is not None:
            names = input_features
        if names is None:
            names = [f"x{i}" for i in range(self.n_features_in_)]
        return np.asarray([f"{n}_{p}" for n in names for p in self.parts], dtype=object)


def _earliest(dates: pd.Series) -> float:
    seconds = _seconds(dates)
    seconds = seconds[~np.isnan(seconds)]
    return float(seconds.min()) if seconds.size else np.nan


def _seconds(dates: pd.Series) -> np.ndarray:
    """Seconds since 1970 (UTC) as floats, NaN for NaT."""
    return ((dates - EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype="float64", na_value=np.nan)


class FilledText(TransformerMixin, BaseEstimator):
    """One free-text column as the 1-D array of strings a text vectorizer reads: missing
    values become "" (TfidfVectorizer refuses NaN)."""

    def fit(self, X: Any, y: Any = None) -> FilledText:
        names, columns = _columns(X)
        if len(columns) != 1:
            raise ValueError(f"FilledText takes one text column, got {len(columns)}: {names}")
        self.n_features_in_ = 1
        return self

    def transform(self, X: Any) -> np.ndarray:
        _, columns = _columns(X)
        if len(columns) != 1:
            raise ValueError(f"FilledText takes one text column, got {len(columns)}")
        column = columns[0]
        return np.where(column.isna(), "", column.astype(str)).astype(object)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(input_features if input_features is not None else ["text"], dtype=object)
