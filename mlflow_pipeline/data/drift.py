"""Data profiles and drift between two of them: pure functions over frames and JSON-ready dicts.

A profile describes a dataset per column, as its role says (``config.ROLES``: set in
``data.columns`` or inferred, as train sees them), and keeps what a later drift check needs
without the data itself. Numeric and integer columns: statistics, the reference's quantile bins
(PSI) and a seeded random sample of its values (the two-sample KS test). Categorical ones: their
category counts (PSI, the chi-square test of the two count vectors). Datetime ones: their range,
spacing and the share of values that are not dates. Free text: its length statistics (compared
as a numeric column) and a bounded vocabulary. Ids: counts only, never compared.
Drift compares today's data with such a profile per feature; categories today's data has and
the reference never had are counted and reported as new.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import Task
from mlflow_pipeline.dates import parse_dates
from mlflow_pipeline.parallel import native_threads, ordered_map
from mlflow_pipeline.schemas import ColumnRole, infer_role, mostly_numbers
from mlflow_pipeline.schemas import column_roles as infer_column_roles

# 2: numeric columns keep a value sample for KS (no 101 percentiles); categorical ones keep up
# to KEPT_CATEGORIES category counts by name and those of the rest by hash.
# 3: each column records its role; kinds datetime, text and id besides numeric and categorical.
# A reference of format 2 or older still compares its numeric and categorical columns; today's
# datetime, text and id columns are then listed as not compared.
PROFILE_FORMAT = 3
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_CATEGORIES = 20
# Category counts kept for drift, the most frequent first. Beyond them (a near-unique column)
# the rest are pooled as "other", and the drift result says so.
KEPT_CATEGORIES = 1000
# Pooled categories keep their counts under a 32-bit hash (~12 bytes each) up to this many;
# beyond (an id-like column), only their total: today's values outside the kept categories
# cannot then be told new or pooled.
POOLED_HASHES = 20_000
# PSI bins of a categorical column: its most frequent categories and one bin for the rest
# (each bin adds about 1/n + 1/m of noise to PSI).
PSI_CATEGORIES = 100
# Reference values kept per numeric column for the two-sample KS test: a seeded uniform sample
# without replacement (all values when there are fewer). With 5,000, a D of about 0.025 is
# significant (p < 0.01), well under the usual minimum effect (ks_min_statistic 0.1), at
# ~50-65 KB of profile.json per column.
KS_SAMPLE_SIZE = 5000
KS_SAMPLE_SEED = 0
# Significant digits of a stored sample value: exact for integers and for decimals as CSV files
# hold them; a relative error of 5e-11 otherwise.
KS_SAMPLE_DIGITS = 10
# Floor for empty bins in PSI (log of zero otherwise).
PSI_EPSILON = 1e-4
# The words of free text: runs of letters and digits, lower-cased.
TOKEN = re.compile(r"\w+")
# Texts whose words are counted, per side: a seeded uniform sample beyond this many (splitting
# text into words costs ~10 us a text; the sampled share of unseen words and its variance are
# those of the sample, the length statistics are of every text).
TEXT_WORDS_SAMPLE = 50_000
# Drift settings that DriftConfig (config.py) may not declare yet: their defaults, read with
# ``_setting`` (the YAML can only carry a key the dataclass declares).
SETTING_DEFAULTS: dict[str, Any] = {
    # compare: length (as a numeric column) and vocabulary; skip: listed as not compared.
    "text_method": "compare",
    # Words kept per text column (the most frequent), for the share of unseen words.
    "text_vocabulary": 2000,
    # Drift when today's share of words outside the reference's vocabulary exceeds the share
    # expected of new data from the same source by this much (and significantly).
    "text_unseen_increase": 0.1,
    # Drift when at least this share of today's dates is before the reference's first date.
    "datetime_before_fraction": 0.5,
    # Drift when the share of values that are not dates grew by this much (and significantly).
    "datetime_unparseable_increase": 0.05,
}


def _setting(settings: DictConfig, name: str) -> Any:
    return settings.get(name, SETTING_DEFAULTS[name])


def column_roles(df: pd.DataFrame, cfg: DictConfig) -> dict[str, ColumnRole]:
    """Each column's role but the target's, as train infers them without a contract:
    ``data.columns.<name>.role`` where set (for the columns ``df`` has: a configured column
    missing today is the schema check's finding, not an error here), ``data.ignore_columns``,
    else inferred from the values. Raises ConfigError for an unknown role."""
    target = cfg.data.target
    configured = OmegaConf.to_container(cfg.data.columns, resolve=True) or {}
    present = {k: v for k, v in configured.items() if k in df.columns and k != target}
    return infer_column_roles(df, target, present, list(cfg.data.ignore_columns))


def profile(
    df: pd.DataFrame,
    cfg: DictConfig,
    roles: Mapping[str, ColumnRole] | None = None,
    *,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile of ``df`` (see the module docstring), JSON-serialisable. ``roles``: each
    column's role (default: ``column_roles(df, cfg)``); the target is a category for
    classification, a number for regression. ``reference``: the profile today's data will be
    compared with; a role inferred from ``df`` gives way to the one it records (a small batch
    may not look like ids or free text, a date column with a few bad values not like dates)."""
    target = cfg.data.target
    settings = cfg.validation.drift
    bins = int(settings.bins)
    vocabulary = int(_setting(settings, "text_vocabulary"))
    task = Task(cfg.data.task)
    classification = task is Task.classification
    if roles is None:
        roles = column_roles(df, cfg)
    if reference is not None:
        roles = {**roles, **recorded_roles(reference, roles)}
    resolved = {}
    for name in df.columns:
        if name == target:
            # A class label is a category, whatever its dtype.
            kind = "categorical" if classification else "numeric"
            resolved[name] = ColumnRole(kind, "the target", inferred=False)
        else:
            resolved[name] = roles.get(name) or infer_role(df[name], str(name))
    columns = _column_profiles(df, resolved, bins, vocabulary)
    balance = None
    if target in df.columns and classification:
        shares = df[target].value_counts(normalize=True, dropna=False)
        balance = {str(k): float(v) for k, v in shares.items()}
    return {
        "format": PROFILE_FORMAT,
        "dataset": "raw",
        "rows": len(df),
        "n_columns": df.shape[1],
        "target": {"name": target, "task": task.value, "balance": balance},
        "columns": columns,
    }


def recorded_roles(
    reference: dict[str, Any], roles: Mapping[str, ColumnRole]
) -> dict[str, ColumnRole]:
    """The roles ``reference`` (a profile) records for the columns whose role in ``roles`` was
    inferred and differs (none before profile format 3)."""
    found = {}
    for name, role in roles.items():
        column = reference.get("columns", {}).get(str(name)) or {}
        if role.inferred and column.get("role") not in (None, role.role):
            reason = _reason(column, "as in the reference: ")
            found[name] = ColumnRole(column["role"], reason, False)
    return found


def _reason(column: dict[str, Any], prefix: str = "") -> str:
    """Why a profiled column has its role, as its profile records it."""
    inferred = "inferred: " if column.get("role_inferred") else ""
    return f"{prefix}{inferred}{column['role_reason']}"


def _column_profiles(
    df: pd.DataFrame, roles: Mapping[Any, ColumnRole], bins: int, vocabulary: int
) -> dict[str, dict[str, Any]]:
    """Every column's profile, in ``df``'s column order. Columns of numbers are profiled on as
    many threads as the stage's native thread pools may use (numpy sorts them without the GIL:
    sorting is most of a large profile); the others, whose text parsing holds the GIL and sets
    warning filters, in this thread."""
    numeric = [
        name
        for name in df.columns
        if roles[name].role == "numeric" and pd.api.types.is_numeric_dtype(df[name])
    ]
    # Each thread gets a Series of its own over the column's values (no copy): pandas'
    # copy-on-write bookkeeping of views of one frame is not thread-safe.
    columns = [pd.Series(df[name].array, index=df.index, name=name, copy=False) for name in numeric]
    profiled = dict(
        zip(
            numeric,
            ordered_map(
                lambda column: _column_profile(column, roles[column.name], bins, vocabulary),
                columns,
                native_threads(),
                name="profile",
            ),
            strict=True,
        )
    )
    return {
        str(name): profiled[name]
        if name in profiled
        else _column_profile(df[name], roles[name], bins, vocabulary)
        for name in df.columns
    }


def _column_profile(
    values: pd.Series, role: ColumnRole, bins: int, vocabulary: int
) -> dict[str, Any]:
    if role.role == "numeric" and values.dtype.kind in "fiu" and isinstance(values.dtype, np.dtype):
        # Plain numpy numbers: sorted once with their missing values (NaN sorts last), so the
        # count of those needs no mask and the present values no filtered copy.
        data = values.to_numpy(dtype="float64", copy=True)
        data.sort()
        count = int(np.searchsorted(data, np.nan, side="left"))
        common = _common(values, role, count)
        return {"kind": "numeric", **common, **_sorted_profile(data[:count], bins)}
    present = values.dropna()
    common = _common(values, role, len(present))
    if role.role == "id":
        return {"kind": "id", **common, "distinct": int(present.nunique())}
    if role.role == "datetime":
        return {"kind": "datetime", **common, **_datetime_stats(present, bins)}
    if role.role == "text":
        return {"kind": "text", **common, **_text_stats(present, bins, vocabulary)}
    categorical = role.role == "categorical"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric and not categorical and mostly_numbers(values):
        # Numbers stored as text with a little junk: numeric, as the data contract infers it.
        present = pd.to_numeric(present.astype(str).str.strip(), errors="coerce").dropna()
        numeric = True
    if numeric and not categorical:
        return {"kind": "numeric", **common, **_numeric_profile(present, bins)}
    counts = present.astype(str).value_counts()
    common["distinct"] = len(counts)
    kept = counts.head(KEPT_CATEGORIES)
    pooled = counts.iloc[KEPT_CATEGORIES:]
    return {
        "kind": "categorical",
        **common,
        "top": [[str(k), int(v)] for k, v in counts.head(TOP_CATEGORIES).items()],
        "other": int(counts.iloc[TOP_CATEGORIES:].sum()),
        "frequencies": {str(k): int(v) for k, v in kept.items()},
        "frequencies_other": int(pooled.sum()),
        "pooled_categories": len(pooled),
        # The pooled categories' counts by hash ("hash:count ..."): a full count vector for
        # chi-square, and new categories stay recognisable.
        "pooled_counts": (
            " ".join(sorted(f"{_category_hash(k):08x}:{n}" for k, n in pooled.items()))
            if 0 < len(pooled) <= POOLED_HASHES
            else None
        ),
    }


def _common(values: pd.Series, role: ColumnRole, count: int) -> dict[str, Any]:
    """What every column's profile holds: its role, dtype and counts (``count`` present)."""
    missing = len(values) - count
    return {
        "role": role.role,
        "role_reason": role.reason,
        "role_inferred": role.inferred,
        "dtype": str(values.dtype),
        "count": count,
        "missing": missing,
        "missing_fraction": missing / len(values) if len(values) else 0.0,
    }


def _numeric_profile(present: pd.Series | np.ndarray, bins: int) -> dict[str, Any]:
    """distinct, min, max, mean, std, quantiles, histogram, PSI bins and KS sample of numbers."""
    return _sorted_profile(np.sort(np.asarray(present, dtype="float64")), bins)


def _sorted_profile(data: np.ndarray, bins: int) -> dict[str, Any]:
    """``_numeric_profile`` of sorted float64 values, none missing: distinct values, quantiles,
    bins and the KS sample all read from the one sort."""
    distinct = int(np.count_nonzero(data[1:] != data[:-1])) + 1 if data.size else 0
    # Infinities sort to the ends.
    data = data[np.searchsorted(data, -np.inf, "right") : np.searchsorted(data, np.inf, "left")]
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 squared: std is inf
        stats = _numeric_stats(data, bins)
    return {"distinct": distinct, **stats}


# --------------------------------------------------------------------------------------------
# Datetime columns: range, spacing and unparseable values
# --------------------------------------------------------------------------------------------


def _seconds(parsed: pd.Series) -> np.ndarray:
    """Sorted seconds since 1970 of the dates present (float64)."""
    present = parsed.dropna().to_numpy(dtype="datetime64[s]").astype("int64")
    return np.sort(present.astype("float64"))


def _iso(seconds: float, dates_only: bool) -> str:
    text = str(np.datetime64(round(seconds), "s"))
    return text[:10] if dates_only else text


def _datetime_stats(present: pd.Series, bins: int) -> dict[str, Any]:
    parsed = parse_dates(present)
    unparseable = int(parsed.isna().sum())
    seconds = _seconds(parsed)
    stats: dict[str, Any] = {
        "distinct": int(np.unique(seconds).size),
        "unparseable": unparseable,
        "unparseable_fraction": unparseable / len(present) if len(present) else 0.0,
    }
    if not seconds.size:
        empty = dict.fromkeys(("min", "max", "dates_only", "spacing_seconds", "spacing"))
        stats["histogram"] = None
        return {**stats, **empty}
    dates_only = bool(np.all(seconds % 86_400 == 0))
    distinct = np.unique(seconds)
    low, high = float(seconds[0]), float(seconds[-1])
    counts, edges = np.histogram(seconds, bins=bins, range=(low, high) if high > low else None)
    spacing = float(np.median(np.diff(distinct))) if distinct.size > 1 else None
    return {
        **stats,
        "min": _iso(low, dates_only),
        "max": _iso(high, dates_only),
        "dates_only": dates_only,
        # The usual step between consecutive distinct times (a daily column: 86,400).
        "spacing_seconds": spacing,
        "spacing": duration_words(spacing) if spacing is not None else None,
        "histogram": {
            "edges": [_iso(e, dates_only and e % 86_400 == 0) for e in edges.tolist()],
            "counts": counts.tolist(),
        },
    }


def duration_words(seconds: float | None) -> str:
    """A duration in words: ``86400`` -> "1 day", ``5400`` -> "1.5 hours"."""
    if seconds is None:
        return "unknown"
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            amount = seconds / size
            text = f"{amount:.3g}"
            return f"{text} {unit}" + ("" if text == "1" else "s")
    return f"{seconds:.3g} s"


# --------------------------------------------------------------------------------------------
# Free text: length statistics and a bounded vocabulary
# --------------------------------------------------------------------------------------------


def _words(texts: pd.Series) -> pd.Series:
    """Every word of ``texts`` (a seeded sample of TEXT_WORDS_SAMPLE of them when there are
    more), lower-cased, indexed by the position of the text it is in."""
    if len(texts) > TEXT_WORDS_SAMPLE:
        rng = np.random.default_rng(KS_SAMPLE_SEED)
        texts = texts.iloc[np.sort(rng.choice(len(texts), TEXT_WORDS_SAMPLE, replace=False))]
    found = texts.str.lower().str.findall(TOKEN.pattern)
    found.index = pd.RangeIndex(len(found))
    return found.explode().dropna()


def _word_counts(words: pd.Series) -> pd.Series:
    """How often each word occurs, the most frequent first (ties by word)."""
    counts = words.value_counts()
    if counts.empty:
        return counts.astype("int64")
    order = np.lexsort((counts.index.to_numpy(dtype=str), -counts.to_numpy()))
    return counts.iloc[order]


def _share_of_texts(flags: pd.Series, texts: int) -> tuple[float, float]:
    """The share of words flagged (``flags``: one bool per word, indexed by its text) and its
    variance, with the texts as the sampled units (words of one text are not independent: the
    ratio estimator's variance over texts)."""
    total = len(flags)
    if not total:
        return 0.0, 0.0
    share = float(flags.mean())
    text = flags.index.to_numpy(dtype=np.int64)
    flagged = np.bincount(text, weights=flags.to_numpy(dtype=float))
    residual = flagged - share * np.bincount(text)
    units = max(min(texts, TEXT_WORDS_SAMPLE), 2)
    return share, float(units / (units - 1) * np.sum(residual**2) / total**2)


def _text_stats(present: pd.Series, bins: int, vocabulary: int) -> dict[str, Any]:
    texts = present.astype(str)
    words = _words(texts)
    counts = _word_counts(words)
    kept = counts.head(vocabulary)
    # The share of a new batch's words the kept vocabulary will not know, if the batch comes
    # from the same source: the words outside the vocabulary, plus the Good-Turing estimate of
    # words never seen (the share of words seen once), counting the ones kept here. Its
    # variance is taken over the texts, as today's share's is.
    known = set(kept.index[kept > 1])
    expected, variance = _share_of_texts(~words.isin(known), len(texts))
    if len(words):  # plus the Good-Turing estimate's own term (Esty 1983): 2 n2 / n^2
        variance += 2 * int((kept == 2).sum()) / len(words) ** 2
    return {
        "distinct": int(texts.nunique()),
        "length": {"kind": "numeric", **_numeric_profile(texts.str.len(), bins)},
        "words": len(words),
        "words_per_value": len(words) / len(texts) if len(texts) else 0.0,
        "distinct_words": len(counts),
        "vocabulary": " ".join(kept.index),
        "vocabulary_size": len(kept),
        "expected_unseen": expected,
        "expected_unseen_variance": variance,
    }


def _sorted_quantiles(data: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(data, q)`` (linear interpolation) of an already sorted array."""
    position = q * (data.size - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, data.size - 1)
    return data[low] + (position - low) * (data[high] - data[low])


def sorted_histogram(data: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(data, bins)`` of a sorted, non-empty array of finite values, counted by
    binary search on its edges (bin i holds edge[i] <= x < edge[i+1], the last one its right
    edge too, as numpy's does): the same counts and edges without a pass over the values."""
    low, high = float(data[0]), float(data[-1])
    if high == low:
        # numpy widens a constant's range by 0.5 each side; from about 1e16 on that is less
        # than the floats' spacing and numpy raises "Too many bins": widen by bins spacings.
        half = max(0.5, float(np.spacing(abs(low))) * bins)
        top = float(np.finfo("float64").max)
        low, high = max(low - half, -top), min(high + half, top)
    if np.isfinite(high - low):
        edges = np.histogram_bin_edges(data[:1], bins=bins, range=(low, high))
    else:  # a range wider than the largest float (-9e307 .. 9e307), where numpy raises
        edges = np.linspace(low / 2, high / 2, bins + 1) * 2
    counts = np.diff(np.searchsorted(data, edges[1:-1], side="left"), prepend=0, append=data.size)
    return counts, edges


def _numeric_stats(data: np.ndarray, bins: int) -> dict[str, Any]:
    """Statistics of a sorted array of finite values."""
    if data.size == 0:
        empty = {"min": None, "max": None, "mean": None, "std": None}
        return {**empty, "quantiles": None, "histogram": None, "bins": None, "sample": None}
    quantiles = _sorted_quantiles(data, np.asarray(QUANTILES))
    low, high = float(data[0]), float(data[-1])
    counts, edges = sorted_histogram(data, bins)
    # PSI bins: the reference's own quantiles, so each holds about 1/bins of it.
    inner = np.unique(_sorted_quantiles(data, np.linspace(0, 1, bins + 1)[1:-1]))
    # Bin i holds edge[i-1] <= x < edge[i], as compare() bins today's data.
    fractions = np.diff(np.searchsorted(data, inner, side="left"), prepend=0, append=data.size)
    return {
        "min": low,
        "max": high,
        **_mean_std(data),
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "bins": {"edges": inner.tolist(), "fractions": (fractions / data.size).tolist()},
        "sample": _sample(data),
    }


def _mean_std(data: np.ndarray) -> dict[str, float]:
    """Mean and sample standard deviation of a sorted array of finite values; values near the
    largest float are scaled first, so that their sum does not overflow to inf."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(data.mean())
        std = float(data.std(ddof=1)) if data.size > 1 else 0.0
        if not (np.isfinite(mean) and np.isfinite(std)):
            scale = max(abs(float(data[0])), abs(float(data[-1])))
            scaled = data / scale
            mean = float(scaled.mean()) * scale
            std = float(scaled.std(ddof=1)) * scale if data.size > 1 else 0.0
    return {"mean": mean, "std": std}


def _sample(data: np.ndarray) -> dict[str, Any]:
    """A seeded uniform sample (without replacement) of a sorted array, sorted, for KS.

    The values are one space-separated string: a list would put each on its own line of the
    indented profile.json.
    """
    sample = data
    if data.size > KS_SAMPLE_SIZE:
        rng = np.random.default_rng(KS_SAMPLE_SEED)
        sample = data[np.sort(rng.choice(data.size, KS_SAMPLE_SIZE, replace=False))]
    return {
        "size": int(sample.size),
        "of": int(data.size),
        "seed": KS_SAMPLE_SEED,
        # One %-format of every value at once: as format(v, ".10g") writes each, faster.
        "values": " ".join([f"%.{KS_SAMPLE_DIGITS}g"] * sample.size) % tuple(sample.tolist()),
    }


def sample_values(column: dict[str, Any]) -> np.ndarray | None:
    """The KS sample of a numeric column's profile as floats (None when it keeps none)."""
    sample = column.get("sample")
    if not sample:
        return None
    return np.asarray(sample["values"].split(), dtype="float64")


def compare(
    reference: dict[str, Any],
    df: pd.DataFrame,
    current: dict[str, Any],
    cfg: DictConfig,
    *,
    about: dict[str, Any],
) -> dict[str, Any]:
    """Drift of ``df`` (whose profile is ``current``) against the ``reference`` profile.

    Every feature both have is compared as the reference's role says (numeric and integer: PSI
    or KS; categorical: PSI or chi-square, per ``validation.drift``; datetime: range and the
    share of values that are not dates; text: length as a numeric column, and words unseen in
    the reference). Ids, ``ignore`` columns, text with ``text_method=skip``, a role set
    differently in ``data.columns`` today and (against a profile older than format 3) today's
    datetime, text and id columns are listed under ``skipped`` with the reason. Columns
    added, missing or of another kind are listed under ``schema``. ``about`` describes the
    reference (model, version, alias, profile run).
    The significance tests of one comparison are one family: a feature's p-value must be
    below ``ks_pvalue`` (``chi2_pvalue``) divided by their number (Bonferroni), so that data
    without drift is flagged in at most that fraction of comparisons, however many features.
    """
    settings = cfg.validation.drift
    ignored = {*cfg.data.ignore_columns, *settings.ignore}
    ref_columns = {c: p for c, p in reference["columns"].items() if c not in ignored}
    cur_columns = {c: p for c, p in current["columns"].items() if c not in ignored}
    version = int(reference.get("format", 1))
    compared: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    changed_kind: list[str] = []
    for name, ref in ref_columns.items():
        if name not in cur_columns:
            continue
        cur, why = _comparable(name, ref, cur_columns[name], df, settings, version)
        if why:
            skipped[name] = why
        elif cur["kind"] != ref["kind"]:
            changed_kind.append(name)
        else:
            compared[name] = ref
    tests = sum(_tests(ref["kind"], settings) for ref in compared.values())
    features: dict[str, dict[str, Any]] = {}
    for name, ref in compared.items():
        kind = ref["kind"]
        if kind == "numeric":
            features[name] = _numeric_drift(ref, df[name], settings, tests)
        elif kind == "datetime":
            features[name] = _datetime_drift(ref, df[name], settings, tests)
        elif kind == "text":
            features[name] = _text_drift(ref, df[name], settings, tests)
        else:
            features[name] = _categorical_drift(ref, df[name], settings, tests)
    drifted = [n for n, f in features.items() if f["drifted"]]
    return {
        "checked": True,
        "reference": about,
        "reference_format": version,
        "policy": settings.policy,
        "detected": bool(drifted),
        "n_drifted": len(drifted),
        "n_features": len(features),
        # The label is compared too (a shift of the classes or of y is drift), and named so.
        "target": (current.get("target") or {}).get("name"),
        "drifted": sorted(drifted, key=lambda n: -features[n]["score"]),
        "schema": {
            "missing": [c for c in ref_columns if c not in cur_columns],
            "extra": [c for c in cur_columns if c not in ref_columns],
            "kind_changed": changed_kind,
        },
        "skipped": skipped,
        "features": features,
    }


def _comparable(
    name: str,
    ref: dict[str, Any],
    cur: dict[str, Any],
    df: pd.DataFrame,
    settings: DictConfig,
    version: int,
) -> tuple[dict[str, Any], str]:
    """Today's profile of a column as the reference's role describes it, or why the column is
    not compared ("" when it is)."""
    if version < 3:  # numeric or categorical; today's datetime, text and ids were categories
        if cur["kind"] in ("datetime", "text", "id"):
            return cur, (
                f"{_role_words(cur['role'])} today, profiled as {ref['kind']} by the reference "
                f"(profile format {version}): profile the champion's training data again"
            )
        if cur["role"] == "ignore":
            return cur, f"role ignore ({cur['role_reason']})"
        return cur, ""
    role, today = ref["role"], cur["role"]
    if "ignore" in (role, today):
        if today == "ignore":
            return cur, f"role ignore ({cur['role_reason']})"
        # Set (or inferred) for the reference's data, not by today's run: say so.
        return cur, f"role ignore in the reference ({_reason(ref)})"
    if today != role:
        if not cur["role_inferred"]:
            return cur, f"role {role} in the reference, {today} today ({cur['role_reason']})"
        # Inferred differently from today's batch (a small one may not look like ids or free
        # text): the reference's role stands.
        cur = _column_profile(
            df[name],
            ColumnRole(role, _reason(ref, "as in the reference: "), False),
            int(settings.bins),
            int(_setting(settings, "text_vocabulary")),
        )
    if cur["kind"] == ref["kind"] == "id":
        return cur, f"an id: {ref['role_reason']}"
    if cur["kind"] == ref["kind"] == "text" and _setting(settings, "text_method") == "skip":
        return cur, "free text, validation.drift.text_method=skip"
    return cur, ""


def _role_words(role: str) -> str:
    return {"id": "an id", "text": "free text", "datetime": "dates"}.get(role, f"role {role}")


def _tests(kind: str, settings: DictConfig) -> int:
    """The significance tests a feature of this kind adds to the comparison's family."""
    if kind == "numeric":
        return int(settings.numeric_method == "ks")
    if kind == "categorical":
        return int(settings.categorical_method == "chi2")
    if kind == "text":  # length (as numeric), and the unseen words
        return int(settings.numeric_method == "ks") + 1
    return 1  # datetime: the share of values that are not dates


def _numeric_drift(
    ref: dict[str, Any], values: pd.Series, settings: DictConfig, tests: int
) -> dict[str, Any]:
    if not pd.api.types.is_numeric_dtype(values):
        values = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    data = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
    data = data[np.isfinite(data)]
    if ref.get("bins") is None or data.size == 0:
        return _not_compared("numeric", "no finite values on one side")
    if settings.numeric_method == "psi":
        edges = np.asarray(ref["bins"]["edges"])
        counts = np.bincount(np.searchsorted(edges, data, side="right"), minlength=edges.size + 1)
        score = psi(np.asarray(ref["bins"]["fractions"]), counts / data.size)
        return {**_psi_result("numeric", score, settings), "current_size": int(data.size)}
    reference = sample_values(ref)
    if reference is None:
        return _not_compared(
            "numeric",
            "the reference profile keeps no value sample for KS (profiled before format 2): "
            "profile its data again, or use validation.drift.numeric_method=psi",
        )
    from scipy import stats  # here, not at import: start-up time

    # Exact two-sample KS: the reference's stored sample against every current value.
    test = stats.ks_2samp(reference, data)
    statistic, p_value = float(test.statistic), float(test.pvalue)
    level, said = _significance(settings.ks_pvalue, tests)
    drifted = p_value < level and statistic >= settings.ks_min_statistic
    n, of = reference.size, int(ref["sample"]["of"])
    sampled = f"a sample of {n:,} of its {of:,} values" if n < of else f"all {n:,} values"
    return {
        "kind": "numeric",
        "method": "ks",
        "statistic": statistic,
        "p_value": p_value,
        "threshold": settings.ks_min_statistic,
        "score": statistic,
        "drifted": bool(drifted),
        "p_threshold": level,
        "reference_size": int(n),
        "reference_count": of,
        "current_size": int(data.size),
        "detail": (
            f"KS D={statistic:.3f} (p={p_value:.2g}; reference: {sampled}, current: "
            f"{data.size:,} values); drift when p < {said} and D >= {settings.ks_min_statistic:g}"
        ),
    }


def _categorical_drift(
    ref: dict[str, Any], values: pd.Series, settings: DictConfig, tests: int
) -> dict[str, Any]:
    present = values.dropna().astype(str)
    if present.empty or ref["count"] == 0:
        return _not_compared("categorical", "no values on one side")
    kept: dict[str, int] = ref["frequencies"]
    current = present.value_counts()
    n_current = int(current.sum())
    ref_kept = np.fromiter(kept.values(), dtype=np.int64, count=len(kept))
    cur_kept = current.reindex(list(kept), fill_value=0).to_numpy(dtype=np.int64)
    outside = _outside(ref, current)

    if settings.categorical_method == "psi":
        # Bins: the PSI_CATEGORIES most frequent reference categories, then all the rest.
        ref_bins = np.append(ref_kept[:PSI_CATEGORIES], 0)
        ref_bins[-1] = ref["count"] - ref_bins.sum()
        cur_bins = np.append(cur_kept[:PSI_CATEGORIES], 0)
        cur_bins[-1] = n_current - cur_bins.sum()
        score = psi(ref_bins / ref_bins.sum(), cur_bins / cur_bins.sum())
        result = _psi_result("categorical", score, settings)
    else:
        from scipy import stats  # here, not at import: start-up time

        # The contingency table (categories x reference/current) of every category of either
        # side, each new one a row of its own (the pooled ones as one row when not hashed).
        table = np.column_stack(
            [
                np.concatenate([ref_kept, outside.reference, np.zeros(len(outside.new), int)]),
                np.concatenate([cur_kept, outside.current, outside.new.to_numpy(np.int64)]),
            ]
        )
        table = table[table.sum(axis=1) > 0]
        if len(table) < 2:  # one category on both sides: nothing can differ
            chi2, p_value, dof, cramers_v = 0.0, 1.0, 0, 0.0
        else:
            test = stats.chi2_contingency(table)
            chi2, p_value, dof = float(test.statistic), float(test.pvalue), int(test.dof)
            cramers_v = float(stats.contingency.association(table, method="cramer"))
        level, said = _significance(settings.chi2_pvalue, tests)
        drifted = p_value < level and cramers_v >= settings.chi2_min_cramers_v
        result = {
            "kind": "categorical",
            "method": "chi2",
            # On the threshold's scale (the effect size); chi2 itself is in "chi2".
            "statistic": cramers_v,
            "chi2": chi2,
            "dof": dof,
            "cramers_v": cramers_v,
            "p_value": p_value,
            "threshold": settings.chi2_min_cramers_v,
            "score": cramers_v,
            "drifted": bool(drifted),
            "p_threshold": level,
            "detail": (
                f"chi2={chi2:.1f} (p={p_value:.2g}, Cramer's V={cramers_v:.3f}); drift when "
                f"p < {said} and V >= {settings.chi2_min_cramers_v:g}"
            ),
        }
    new, notes = _new_categories(ref, n_current, outside, settings)
    result.update(
        reference_size=int(ref["count"]),
        current_size=n_current,
        unseen_categories=[str(k) for k in current.index if k not in kept][:20],
        **new,
    )
    if new["all_new"]:
        result["drifted"] = True
    result["detail"] = "; ".join([*notes, result["detail"]])
    return result


def _datetime_drift(
    ref: dict[str, Any], values: pd.Series, settings: DictConfig, tests: int
) -> dict[str, Any]:
    """Dates are not categories: today's batch later than the reference is expected. Drift:
    most of today's dates before the reference's first one (old data again), or the share of
    values that are not dates grown (significantly, by a one-sided Fisher exact test)."""
    present = values.dropna()
    if present.empty or ref["count"] == 0:
        return _not_compared("datetime", "no values on one side")
    parsed = parse_dates(present)
    seconds = _seconds(parsed)
    bad, n = int(parsed.isna().sum()), len(present)
    ref_bad, ref_n = int(ref["unparseable"]), int(ref["count"])
    before_limit = float(_setting(settings, "datetime_before_fraction"))
    increase_limit = float(_setting(settings, "datetime_unparseable_increase"))
    level, said = _significance(settings.chi2_pvalue, tests)
    p_value = None
    if bad * ref_n > ref_bad * n:  # a larger share than the reference's
        from scipy import stats  # here, not at import: start-up time

        table = [[bad, n - bad], [ref_bad, ref_n - ref_bad]]
        p_value = float(stats.fisher_exact(table, alternative="greater").pvalue)
    increase = bad / n - ref_bad / ref_n
    unparseable_drift = p_value is not None and p_value < level and increase >= increase_limit
    notes = []
    before = after = 0.0
    if ref["min"] is None:
        notes.append("the reference has no dates")
    elif seconds.size:
        low, high = (_from_iso(ref["min"]), _from_iso(ref["max"]))
        before = float(np.searchsorted(seconds, low, side="left")) / seconds.size
        after = float(seconds.size - np.searchsorted(seconds, high, side="right")) / seconds.size
        dates_only = bool(ref.get("dates_only")) and bool(np.all(seconds % 86_400 == 0))
        span = _span(_iso(seconds[0], dates_only), _iso(seconds[-1], dates_only))
        theirs = f"the reference's {_span(ref['min'], ref['max'])}"
        if seconds[0] > high:
            where = f"after {theirs}"
        elif seconds[-1] < low:
            where = f"before {theirs}"
        elif before == after == 0.0:
            where = f"within {theirs}"
        else:
            shares = zip(
                (before, 1 - before - after, after), ("before", "within", "after"), strict=True
            )
            where = ", ".join(f"{x:.0%} {side}" for x, side in shares if x > 0) + f" {theirs}"
        notes.append(f"dates {span}, {where}")
        spacing = float(np.median(np.diff(np.unique(seconds)))) if seconds.size > 1 else None
        if spacing is not None and ref.get("spacing_seconds"):
            ratio = spacing / ref["spacing_seconds"]
            note = f"spacing {duration_words(spacing)}"
            if not 0.5 <= ratio <= 2.0:
                note += f" (the reference's: {duration_words(ref['spacing_seconds'])})"
            notes.append(note)
    else:
        notes.append("no value is a date")
    before_drift = bool(seconds.size) and before >= before_limit
    drifted = before_drift or unparseable_drift
    if before_drift:
        notes.insert(0, f"{before:.0%} of the dates before the reference's first ({ref['min']})")
    if bad or ref_bad:
        not_dates = f"{bad / n:.1%} not dates (reference: {ref_bad / ref_n:.1%})"
        notes.insert(0 if unparseable_drift else len(notes), not_dates)
    rule = (
        f"drift when >= {before_limit:.0%} are before the reference's range, or the share "
        f"not dates grows by >= {increase_limit:.0%} (Fisher p < {said})"
    )
    return {
        "kind": "datetime",
        "method": "range",
        # The share of today's dates before the reference's range, on the threshold's scale.
        "statistic": before,
        "p_value": p_value,
        "threshold": before_limit,
        "score": before,
        "drifted": bool(drifted),
        "p_threshold": level,
        "before_fraction": before,
        "after_fraction": after,
        "unparseable_fraction": bad / n,
        "reference_unparseable_fraction": ref_bad / ref_n,
        "reference_size": ref_n,
        "current_size": n,
        "detail": "; ".join([*notes, rule]),
    }


def _from_iso(text: str) -> float:
    return float(np.datetime64(text, "s").astype("int64"))


def _span(first: str, last: str) -> str:
    return first if first == last else f"{first}..{last}"


def _text_drift(
    ref: dict[str, Any], values: pd.Series, settings: DictConfig, tests: int
) -> dict[str, Any]:
    """Free text: its length compared as a numeric column (PSI or KS), and the share of its
    words the reference's vocabulary does not know against the share expected of new text from
    the same source (a one-sided z test, variances over texts, and a minimum increase)."""
    texts = values.dropna().astype(str)
    if texts.empty or ref["count"] == 0:
        return _not_compared("text", "no values on one side")
    result = _numeric_drift(ref["length"], texts.str.len(), settings, tests)
    result["kind"] = "text"
    words = _words(texts)
    total = len(words)
    unseen_flags = ~words.isin(set(ref["vocabulary"].split()))
    share, variance = _share_of_texts(unseen_flags, len(texts))
    unseen = _word_counts(words[unseen_flags.to_numpy()])
    expected = float(ref["expected_unseen"])
    limit = float(_setting(settings, "text_unseen_increase"))
    level, said = _significance(settings.chi2_pvalue, tests)
    # One-sided z test of today's share against the expected one, both variances over texts.
    spread = np.sqrt(variance + float(ref.get("expected_unseen_variance") or 0.0))
    p_value = 1.0
    if share > expected:
        from scipy import stats  # here, not at import: start-up time

        p_value = float(stats.norm.sf((share - expected) / spread)) if spread > 0 else 0.0
    words_drift = p_value < level and share - expected >= limit
    size = ref["vocabulary_size"]
    note = (
        f"words: {share:.1%} of {total:,} unseen in the reference's {size:,} most frequent "
        f"(expected {expected:.1%}; drift when >= {limit:.0%} more and z-test p < {said})"
    )
    if unseen.size:
        note += f", e.g. {', '.join(unseen.index[:5])}"
    length = f"length: {result['detail']}"
    result.update(
        drifted=bool(result["drifted"] or words_drift),
        unseen_words=[str(w) for w in unseen.index[:20]],
        unseen_fraction=share,
        expected_unseen_fraction=expected,
        unseen_p_value=p_value,
        words=int(total),
        detail="; ".join(
            [f"{share - expected:+.1%} unseen words", length, note]
            if words_drift
            else [length, note]
        ),
    )
    return result


@dataclass(frozen=True)
class _Outside:
    """Today's values outside the reference's kept categories. ``reference`` and ``current``:
    the counts of the categories the reference pooled, one entry each (matched by hash), or a
    single entry for them all when it kept no hashes; ``new``: today's count per category the
    reference never had (empty when it cannot be told, ``exact`` False)."""

    reference: np.ndarray
    current: np.ndarray
    new: pd.Series
    exact: bool


def _outside(ref: dict[str, Any], current: pd.Series) -> _Outside:
    outside = current[~current.index.isin(list(ref["frequencies"]))]
    pooled_rows = int(ref.get("frequencies_other", 0))
    if not pooled_rows:
        return _Outside(np.zeros(0, np.int64), np.zeros(0, np.int64), outside, exact=True)
    if not ref.get("pooled_counts"):
        everything = np.array([int(outside.sum())])
        return _Outside(np.array([pooled_rows]), everything, outside.iloc[:0], exact=False)
    pairs = [item.split(":") for item in ref["pooled_counts"].split()]
    row = {int(h, 16): i for i, (h, _) in enumerate(pairs)}
    counts = np.zeros(len(pairs), np.int64)
    new = np.ones(len(outside), dtype=bool)
    for j, (name, count) in enumerate(outside.items()):
        i = row.get(_category_hash(name))
        if i is not None:
            counts[i] += count
            new[j] = False
    reference = np.array([int(n) for _, n in pairs], dtype=np.int64)
    return _Outside(reference, counts, outside[new], exact=True)


def _new_categories(
    ref: dict[str, Any], n_current: int, outside: _Outside, settings: DictConfig
) -> tuple[dict[str, Any], list[str]]:
    """What today's data has that the reference never had, and the notes that say so."""
    kept = len(ref["frequencies"])
    pooled_share = int(ref.get("frequencies_other", 0)) / ref["count"]
    pooled = None
    if pooled_share:
        pooled = {
            "kept_categories": kept,
            "pooled_categories": int(ref.get("pooled_categories") or 0) or None,
            "pooled_fraction": pooled_share,
            "current_pooled_fraction": int(outside.current.sum()) / n_current,
            "hashed": outside.exact,
        }
    if outside.exact:
        n_new = int(outside.new.sum())
        found = {
            "new_categories": [str(k) for k in outside.new.index[:20]],
            "n_new_categories": len(outside.new),
            "new_fraction": n_new / n_current,
            "new_fraction_exact": True,
            "all_new": n_new == n_current,
            "pooled": pooled,
        }
        if found["all_new"]:
            return found, [f"all {n_current:,} values are categories the reference never had"]
        if not n_new:
            return found, []
        shown = ", ".join(found["new_categories"][:5])
        more = f", {len(outside.new) - 5:,} more" if len(outside.new) > 5 else ""
        many = "y" if len(outside.new) == 1 else "ies"
        return found, [
            f"{len(outside.new):,} new categor{many} ({n_new / n_current:.1%} of values: "
            f"{shown}{more})"
        ]
    # The reference kept its KEPT_CATEGORIES most frequent categories and only the total of
    # the rest: today's share outside the kept ones, beyond the reference's, is new categories
    # or pooled ones grown (an estimate: the kept ones were picked as the reference's largest).
    outside_share = int(outside.current.sum()) / n_current
    # Not one value among the kept categories, which held 1 - pooled_share of the reference:
    # by chance with probability pooled_share ** n_current.
    all_new = outside_share == 1.0 and pooled_share**n_current < settings.chi2_pvalue
    notes = [
        f"the reference kept its {kept:,} most frequent categories and pooled the rest "
        f"({pooled_share:.1%} of its values, not known by name) as 'other': "
        f"{outside_share:.1%} of current values are outside those {kept:,}"
    ]
    if all_new:
        notes.insert(0, f"none of the {n_current:,} values is among the reference's {kept:,}")
    found = {
        "new_categories": [],
        "n_new_categories": None,
        "new_fraction": max(outside_share - pooled_share, 0.0),
        "new_fraction_exact": False,
        "all_new": bool(all_new),
        "pooled": pooled,
    }
    return found, notes


def _category_hash(name: str) -> int:
    """A stable 32-bit hash of a category (Python's own hash changes per process). A new
    category that collides with a pooled one counts as pooled: new ones are never overcounted."""
    return zlib.crc32(name.encode("utf-8", "surrogatepass"))


def _significance(alpha: float, tests: int) -> tuple[float, str]:
    """The per-test level for ``tests`` tests at family-wise level ``alpha`` (Bonferroni), and
    how the detail text says it."""
    if tests <= 1:
        return alpha, f"{alpha:g}"
    return alpha / tests, f"{alpha:g}/{tests} tests"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two distributions over the same bins (fractions)."""
    e = np.maximum(np.asarray(expected, float), PSI_EPSILON)
    a = np.maximum(np.asarray(actual, float), PSI_EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _psi_result(kind: str, score: float, settings: DictConfig) -> dict[str, Any]:
    return {
        "kind": kind,
        "method": "psi",
        "statistic": score,
        "p_value": None,
        "threshold": settings.psi_threshold,
        "score": score,
        "drifted": bool(score >= settings.psi_threshold),
        "detail": f"PSI {score:.3f} {'>=' if score >= settings.psi_threshold else '<'} "
        f"{settings.psi_threshold:g}",
    }


def _not_compared(kind: str, why: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "method": None,
        "statistic": None,
        "p_value": None,
        "threshold": None,
        "score": 0.0,
        "drifted": False,
        "detail": f"not compared: {why}",
    }


def metrics(result: dict[str, Any]) -> dict[str, float]:
    """The drift result as MLflow metrics: drift.detected, drift.n_drifted, drift.<feature>."""
    found = {
        "drift.detected": float(result.get("detected", False)),
        "drift.n_drifted": float(result.get("n_drifted", 0)),
    }
    for name, feature in result.get("features", {}).items():
        if feature.get("statistic") is not None:
            found[f"drift.{metric_name(name)}"] = float(feature["score"])
    return found


def metric_name(name: str) -> str:
    """A column name as a legal MLflow metric name part."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(name))


def summary(result: dict[str, Any]) -> str:
    """One line per finding, for the log and error messages."""
    if not result.get("checked"):
        return f"drift not checked: {result.get('reason', 'no reference')}"
    ref = result["reference"]
    head = f"against {ref['model']} v{ref['version']} (@{ref['alias']})"
    lines = []
    schema = result["schema"]
    for key, words in (
        ("missing", "missing (the champion was trained with it)"),
        ("extra", "not in the champion's training data"),
        ("kind_changed", "changed kind (its values are no longer what its role says)"),
    ):
        for column in schema[key]:
            lines.append(f"  - column '{column}': {words}")
    target = result.get("target")
    counted = (
        "column(s), the target included" if target in result.get("features", {}) else ("feature(s)")
    )
    if result["detected"]:
        lines.insert(
            0,
            f"drift detected {head}: {result['n_drifted']} of {result['n_features']} {counted}",
        )
        for name in result["drifted"][:10]:
            what = "target" if name == target else "feature"
            lines.append(f"  - {what} '{name}': {result['features'][name]['detail']}")
        if len(result["drifted"]) > 10:
            lines.append(f"  ... and {len(result['drifted']) - 10} more")
    else:
        changed = "; the columns changed:" if lines else ""  # not drift, but said under it
        lines.insert(0, f"no drift {head} ({result['n_features']} {counted} compared){changed}")
    skipped = result.get("skipped") or {}
    if skipped:  # one line, however many
        shown = [f"'{name}' ({why})" for name, why in list(skipped.items())[:10]]
        more = f", and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        lines.append(f"  - not compared: {'; '.join(shown)}{more}")
    return "\n".join(lines)
