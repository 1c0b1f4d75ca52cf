"""Data profiles and drift between two of them: pure functions over frames and JSON-ready dicts.

A profile describes a dataset per column (type, counts, missing fraction, distinct values,
statistics, histogram or top categories) and keeps what a later drift check needs without the
data itself: the reference's quantile bins (PSI), its 101 percentiles (KS) and its category
frequencies (PSI, chi-square). Drift compares today's data with such a profile per feature.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline.config import Task
from mlflow_pipeline.schemas import mostly_numbers

PROFILE_FORMAT = 1
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
TOP_CATEGORIES = 20
# Category frequencies kept for drift; rarer categories are pooled as "other".
KEPT_CATEGORIES = 100
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
        # Sorted once: distinct values, percentiles and bins all read from it.
        data = np.sort(present.to_numpy(dtype="float64"))
        distinct = int(np.count_nonzero(np.diff(data))) + 1 if data.size else 0
        data = data[np.isfinite(data)]
        with np.errstate(over="ignore", invalid="ignore"):  # 1e300 squared: std is inf
            stats = _numeric_stats(data, bins)
        return {"kind": "numeric", **common, "distinct": distinct, **stats}
    counts = present.astype(str).value_counts()
    common["distinct"] = len(counts)
    kept = counts.head(KEPT_CATEGORIES)
    return {
        "kind": "categorical",
        **common,
        "top": [[str(k), int(v)] for k, v in counts.head(TOP_CATEGORIES).items()],
        "other": int(counts.iloc[TOP_CATEGORIES:].sum()),
        "frequencies": {str(k): int(v) for k, v in kept.items()},
        "frequencies_other": int(counts.iloc[KEPT_CATEGORIES:].sum()),
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
        return {**empty, "quantiles": None, "histogram": None, "percentiles": None, "bins": None}
    percentiles = _sorted_quantiles(data, np.arange(101) / 100)
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
        "quantiles": {str(q): float(percentiles[round(q * 100)]) for q in QUANTILES},
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
        "percentiles": percentiles.tolist(),
        "bins": {"edges": inner.tolist(), "fractions": (fractions / data.size).tolist()},
    }


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
    """
    settings = cfg.validation.drift
    skipped = {*cfg.data.ignore_columns, *settings.ignore}
    ref_columns = {c: p for c, p in reference["columns"].items() if c not in skipped}
    cur_columns = {c: p for c, p in current["columns"].items() if c not in skipped}
    features: dict[str, dict[str, Any]] = {}
    changed_kind = []
    for name, ref in ref_columns.items():
        if name not in cur_columns:
            continue
        if ref["kind"] != cur_columns[name]["kind"]:
            changed_kind.append(name)
            continue
        if ref["kind"] == "numeric":
            features[name] = _numeric_drift(ref, df[name], settings)
        else:
            features[name] = _categorical_drift(ref, df[name], settings)
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


def _numeric_drift(ref: dict[str, Any], values: pd.Series, settings: DictConfig) -> dict[str, Any]:
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
        return _psi_result("numeric", score, settings)
    # KS from the reference's percentiles: the largest gap between the two CDFs, checked at
    # the reference's 101 percentile points (1% resolution).
    points = np.asarray(ref["percentiles"])
    # F_ref at each point: the last percentile rank with that value (ties: discrete values).
    ref_cdf = (np.searchsorted(points, points, side="right") - 1) / 100
    cur_cdf = np.searchsorted(np.sort(data), points, side="right") / data.size
    statistic = float(np.max(np.abs(cur_cdf - ref_cdf)))
    n, m = ref["count"], data.size
    p_value = _ks_pvalue(statistic, n, m)
    drifted = p_value < settings.ks_pvalue and statistic >= settings.ks_min_statistic
    return {
        "kind": "numeric",
        "method": "ks",
        "statistic": statistic,
        "p_value": p_value,
        "threshold": settings.ks_min_statistic,
        "score": statistic,
        "drifted": bool(drifted),
        "detail": (
            f"KS D={statistic:.3f} (p={p_value:.2g}); drift when p < {settings.ks_pvalue:g} "
            f"and D >= {settings.ks_min_statistic:g}"
        ),
    }


def _categorical_drift(
    ref: dict[str, Any], values: pd.Series, settings: DictConfig
) -> dict[str, Any]:
    present = values.dropna().astype(str)
    if present.empty or ref["count"] == 0:
        return _not_compared("categorical", "no values on one side")
    known = list(ref["frequencies"])
    ref_counts = np.asarray([*ref["frequencies"].values(), ref["frequencies_other"]], float)
    current = present.value_counts()
    cur_counts = np.asarray(
        [
            *(float(current.get(k, 0)) for k in known),
            float(current.drop(known, errors="ignore").sum()),
        ]
    )
    unseen = [str(k) for k in current.index if k not in ref["frequencies"]]
    if settings.categorical_method == "psi":
        score = psi(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())
        result = _psi_result("categorical", score, settings)
    else:
        from scipy import stats  # here, not at import: start-up time

        keep = (ref_counts > 0) | (cur_counts > 0)
        expected = np.maximum(ref_counts[keep] / ref_counts.sum(), PSI_EPSILON)
        expected = expected / expected.sum() * cur_counts.sum()
        chi2, p_value = stats.chisquare(cur_counts[keep], expected)
        k = max(int(keep.sum()) - 1, 1)
        cramers_v = math.sqrt(float(chi2) / (cur_counts.sum() * k))
        drifted = p_value < settings.chi2_pvalue and cramers_v >= settings.chi2_min_cramers_v
        result = {
            "kind": "categorical",
            "method": "chi2",
            # On the threshold's scale (the effect size); chi2 itself is in "chi2".
            "statistic": cramers_v,
            "chi2": float(chi2),
            "p_value": float(p_value),
            "threshold": settings.chi2_min_cramers_v,
            "score": cramers_v,
            "drifted": bool(drifted),
            "detail": (
                f"chi2={float(chi2):.1f} (p={float(p_value):.2g}, Cramer's V={cramers_v:.3f}); "
                f"drift when p < {settings.chi2_pvalue:g} and V >= {settings.chi2_min_cramers_v:g}"
            ),
        }
    result["unseen_categories"] = unseen[:20]
    return result


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


def _ks_pvalue(statistic: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS p-value (Kolmogorov distribution)."""
    from scipy import stats  # here, not at import: start-up time

    if n == 0 or m == 0:
        return 1.0
    effective = math.sqrt(n * m / (n + m))
    return float(stats.kstwobign.sf(statistic * effective))


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
