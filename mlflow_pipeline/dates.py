"""Which way round a column writes its dates: ``02.01.2014`` is 2 January in most of the world
and February 2 in the US. pandas guesses month-first from the first value and reads every
value after it that way until one cannot be (``13.01.2014``), so a day-first column came out
partly month-first without a word."""

from __future__ import annotations

import warnings

import pandas as pd

# A date written with numbers only: day and month (either way round) then the year.
NUMERIC_DATE = r"^\s*(\d{1,2})[./-](\d{1,2})[./-]\d{2,4}\b"
# How many distinct values are looked at.
SAMPLE = 10_000


def day_first(values: pd.Series) -> bool | None:
    """True when the column's numeric dates are day-first (some first field is above 12 and no
    second field is), False when they are month-first (the other way round), None when the
    values do not tell (all fields at most 12, or both kinds: then pandas' own reading)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return None
    texts = pd.Series(values.dropna().astype(str).unique()[:SAMPLE])
    fields = texts.str.extract(NUMERIC_DATE).dropna()
    if fields.empty:
        return None
    first, second = fields[0].astype(int), fields[1].astype(int)
    days_first, days_second = bool((first > 12).any()), bool((second > 12).any())
    if days_first != days_second:
        return days_first
    return None


def parse_dates(values: pd.Series) -> pd.Series:
    """``values`` as timezone-naive UTC timestamps, NaT where a value is not a date. Text is
    parsed once per distinct value: in the format of the first one, then each of the others
    on its own (``format="mixed"``); times with an offset are converted to UTC."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed
    texts = values.astype(str).str.strip()
    distinct = pd.Series(texts.unique())
    dayfirst = bool(day_first(distinct))  # 02.01.2014: 2 January when the column says so
    with warnings.catch_warnings():  # "could not infer format": the mixed pass handles it
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(distinct, errors="coerce", utc=True, dayfirst=dayfirst)
        failed = parsed.isna() & distinct.ne("")
        if failed.any():
            parsed[failed] = pd.to_datetime(
                distinct[failed], errors="coerce", utc=True, format="mixed", dayfirst=dayfirst
            )
    lookup = pd.Series(parsed.dt.tz_localize(None).to_numpy(), index=distinct.to_numpy())
    return texts.map(lookup)
