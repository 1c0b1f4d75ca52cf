"""Data profiles and drift between two of them: pure functions over frames and JSON-ready dicts.

A profile describes a dataset per column (type, counts, missing fraction, distinct values,
statistics, histogram or top categories) and keeps what a later drift check needs without the
data itself: the reference's quantile bins (PSI), a seeded random sample of its values (the
two-sample KS test) and its category counts (PSI, the chi-square test of the two count vectors).
Drift compares today's data with such a profile per feature; categories today's data has and
the reference never had are counted and reported as new.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import Task
from mlflow_pipeline.schemas import mostly_numbers

# 2: numeric columns keep a value sample for KS (no 101 percentiles); categorical ones keep up
# to KEPT_CATEGORIES category counts by name and those of the rest by hash.
PROFILE_FORMAT = 2
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


def profile(df: pd.DataFrame, cfg: DictConfig) -> dict[str, Any]:
    """The profile of ``df`` (see the module docstring), JSON-serialisable."""
    target = cfg.data.target
    bins = int(cfg.validation.drift.bins)
    classification = Task(cfg.data.task) is Task.classification
    columns = {
        # A class label is a category, whatever its dtype.
        str(name): _column_profile(df[name], bins, categorical=classification and name == target)
        for name in df.columns
    }
    balance = None
    if target in df.columns and classification:
        shares = df[target].value_counts(normalize=True, dropna=False)
        balance = {str(k): float(v) for k, v in shares.items()}
    return {
        "format": PROFILE_FORMAT,
        "dataset": "raw",
        "rows": len(df),
        "n_columns": df.shape[1],
        "target": {"name": target, "task": Task(cfg.data.task).value, "balance": balance},
        "columns": columns,
    }


def _column_profile(values: pd.Series, bins: int, *, categorical: bool = False) -> dict[str, Any]:
    missing = int(values.isna().sum())
    present = values.dropna()
    common = {
        "dtype": str(values.dtype),
        "count": int(len(present)),
        "missing": missing,
        "missing_fraction": missing / len(values) if len(values) else 0.0,
    }
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if not numeric and not categorical and mostly_numbers(values):
        # Numbers stored as text with a little junk: numeric, as the data contract infers it.
        present = pd.to_numeric(present.astype(str).str.strip(), errors="coerce").dropna()
        numeric = True
    if numeric and not categorical:
        # Sorted once: distinct values, quantiles, bins and the KS sample all read from it.
        data = np.sort(present.to_numpy(dtype="float64"))
        distinct = int(np.count_nonzero(np.diff(data))) + 1 if data.size else 0
        data = data[np.isfinite(data)]
        with np.errstate(over="ignore", invalid="ignore"):  # 1e300 squared: std is inf
            stats = _numeric_stats(data, bins)
        return {"kind": "numeric", **common, "distinct": distinct, **stats}
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


def _sorted_quantiles(data: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(data, q)`` (linear interpolation) of an already sorted array."""
    position = q * (data.size - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, data.size - 1)
    return data[low] + (position - low) * (data[high] - data[low])


def _numeric_stats(data: np.ndarray, bins: int) -> dict[str, Any]:
    """Statistics of a sorted array of finite values."""
    if data.size == 0:
        empty = {"min": None, "max": None, "mean": None, "std": None}
        return {**empty, "quantiles": None, "histogram": None, "bins": None, "sample": None}
    quantiles = _sorted_quantiles(data, np.asarray(QUANTILES))
    low, high = float(data[0]), float(data[-1])
    counts, edges = np.histogram(data, bins=bins, range=(low, high) if high > low else None)
    # PSI bins: the reference's own quantiles, so each holds about 1/bins of it.
    inner = np.unique(_sorted_quantiles(data, np.linspace(0, 1, bins + 1)[1:-1]))
    # Bin i holds edge[i-1] <= x < edge[i], as compare() bins today's data.
    fractions = np.diff(np.searchsorted(data, inner, side="left"), prepend=0, append=data.size)
    return {
        "min": low,
        "max": high,
        "mean": float(data.mean()),
        "std": float(data.std(ddof=1)) if data.size > 1 else 0.0,
        "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, quantiles, strict=True)},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "bins": {"edges": inner.tolist(), "fractions": (fractions / data.size).tolist()},
        "sample": _sample(data),
    }


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
        "values": " ".join(format(v, f".{KS_SAMPLE_DIGITS}g") for v in sample.tolist()),
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

    Every feature both have is compared (numeric: PSI or KS; categorical: PSI or chi-square,
    per ``validation.drift``); columns added, missing or of another kind are listed under
    ``schema``. ``about`` describes the reference (model, version, alias, profile run).
    The KS and chi-square tests of one comparison are one family: a feature's p-value must be
    below ``ks_pvalue`` (``chi2_pvalue``) divided by their number (Bonferroni), so that data
    without drift is flagged in at most that fraction of comparisons, however many features.
    """
    settings = cfg.validation.drift
    skipped = {*cfg.data.ignore_columns, *settings.ignore}
    ref_columns = {c: p for c, p in reference["columns"].items() if c not in skipped}
    cur_columns = {c: p for c, p in current["columns"].items() if c not in skipped}
    compared = {
        name: ref
        for name, ref in ref_columns.items()
        if name in cur_columns and ref["kind"] == cur_columns[name]["kind"]
    }
    changed_kind = [n for n in ref_columns if n in cur_columns and n not in compared]
    tests = sum(
        (ref["kind"] == "numeric" and settings.numeric_method == "ks")
        or (ref["kind"] != "numeric" and settings.categorical_method == "chi2")
        for ref in compared.values()
    )
    features: dict[str, dict[str, Any]] = {}
    for name, ref in compared.items():
        if ref["kind"] == "numeric":
            features[name] = _numeric_drift(ref, df[name], settings, tests)
        else:
            features[name] = _categorical_drift(ref, df[name], settings, tests)
    drifted = [n for n, f in features.items() if f["drifted"]]
    return {
        "checked": True,
        "reference": about,
        "policy": settings.policy,
        "detected": bool(drifted),
        "n_drifted": len(drifted),
        "n_features": len(features),
        "drifted": sorted(drifted, key=lambda n: -features[n]["score"]),
        "schema": {
            "missing": [c for c in ref_columns if c not in cur_columns],
            "extra": [c for c in cur_columns if c not in ref_columns],
            "kind_changed": changed_kind,
        },
        "features": features,
    }


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
        ("kind_changed", "changed kind (numeric <-> categorical)"),
    ):
        for column in schema[key]:
            lines.append(f"  - column '{column}': {words}")
    if result["detected"]:
        lines.insert(
            0,
            f"drift detected {head}: {result['n_drifted']} of {result['n_features']} feature(s)",
        )
        for name in result["drifted"][:10]:
            lines.append(f"  - feature '{name}': {result['features'][name]['detail']}")
        if len(result["drifted"]) > 10:
            lines.append(f"  ... and {len(result['drifted']) - 10} more")
    else:
        lines.insert(0, f"no drift {head} ({result['n_features']} feature(s) compared)")
    return "\n".join(lines)
