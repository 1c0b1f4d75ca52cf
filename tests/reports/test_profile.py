"""The profile report: breast_cancer and a shifted batch, real matplotlib, decoded images; real
profiles of dates, free text and ids."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from vega_datasets import data as vega

from mlflow_pipeline.config import load_config
from mlflow_pipeline.data import drift as drifts  # the name drift is the fixture's
from mlflow_pipeline.reports.profile import profile_report
from tests.reports.helpers import decoded_images, from_json, parse, visible_text

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def column_profile(series: pd.Series, bins: int = 10) -> dict:
    values = series.dropna()
    base = {
        "dtype": str(series.dtype),
        "count": int(values.size),
        "missing": int(series.isna().sum()),
        "missing_fraction": float(series.isna().mean()),
        "distinct": int(values.nunique()),
    }
    if pd.api.types.is_numeric_dtype(series):
        if values.empty:
            stats = dict.fromkeys(("min", "max", "mean", "std", "quantiles", "histogram"))
        else:
            counts, edges = np.histogram(values.to_numpy(dtype=float), bins=bins)
            stats = {
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "std": float(values.std()),
                "quantiles": {str(q): float(values.quantile(q)) for q in QUANTILES},
                "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
            }
        return {"kind": "numeric", **base, **stats}
    top = values.value_counts().head(10)
    return {
        "kind": "categorical",
        **base,
        "top": [[str(k), int(v)] for k, v in top.items()],
        "other": int(values.size - top.sum()),
    }


def make_profile(df: pd.DataFrame, dataset: str, target: str, task: str) -> dict:
    balance = None
    if task == "classification":
        shares = df[target].value_counts(normalize=True).sort_index()
        balance = {str(k): float(v) for k, v in shares.items()}
    return from_json(
        {
            "dataset": dataset,
            "rows": len(df),
            "n_columns": df.shape[1],
            "target": {"name": target, "task": task, "balance": balance},
            "columns": {name: column_profile(df[name]) for name in df.columns},
        }
    )


def psi(reference: pd.Series, current: pd.Series) -> float:
    edges = np.histogram_bin_edges(reference.dropna(), bins=10)
    edges[0], edges[-1] = -np.inf, np.inf
    ref = np.histogram(reference.dropna(), edges)[0] / reference.notna().sum() + 1e-4
    cur = np.histogram(current.dropna(), edges)[0] / current.notna().sum() + 1e-4
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def make_drift(reference: pd.DataFrame, current: pd.DataFrame, target: str) -> dict:
    features = {}
    for name in reference.columns.drop(target):
        if pd.api.types.is_numeric_dtype(reference[name]):
            if current[name].notna().sum() == 0:
                continue
            stat = psi(reference[name], current[name])
            features[name] = {
                "kind": "numeric",
                "method": "psi",
                "statistic": stat,
                "p_value": None,
                "threshold": 0.2,
                "drifted": stat >= 0.2,
                "detail": f"PSI {stat:.2f} {'>=' if stat >= 0.2 else '<'} 0.2",
            }
        else:
            ref = reference[name].value_counts(normalize=True)
            cur = current[name].value_counts(normalize=True)
            stat = float(0.5 * ref.sub(cur, fill_value=0).abs().sum())
            features[name] = {
                "kind": "categorical",
                "method": "tvd",
                "statistic": stat,
                "p_value": None,
                "threshold": 0.1,
                "drifted": stat >= 0.1,
                "detail": f"total variation {stat:.2f}",
            }
    n_drifted = sum(f["drifted"] for f in features.values())
    return from_json(
        {
            "reference": {
                "model": "breast_cancer",
                "version": "3",
                "alias": "champion",
                "profile_run": "0123456789abcdef",
            },
            "policy": "warn",
            "detected": n_drifted > 0,
            "n_drifted": n_drifted,
            "n_features": len(features),
            "features": features,
        }
    )


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    """breast_cancer (30 numeric features + target) plus a categorical and an awkward column."""
    data = load_breast_cancer(as_frame=True)
    df = data.frame.copy()
    rng = np.random.default_rng(0)
    df["<script>"] = rng.choice(["north", "south", "east & west"], size=len(df), p=[0.5, 0.3, 0.2])
    return df


@pytest.fixture(scope="module")
def shifted(cancer: pd.DataFrame) -> pd.DataFrame:
    """A later batch: 11 features shifted, the categorical mix changed, one column emptied."""
    df = cancer.copy()
    df["mean radius"] = df["mean radius"] * 1.4
    for name in [c for c in df.columns if c.startswith("worst ")]:
        df[name] = df[name] + df[name].std()
    rng = np.random.default_rng(1)
    df["<script>"] = rng.choice(["north", "south", "east & west"], size=len(df), p=[0.2, 0.3, 0.5])
    df["mean texture"] = np.nan
    return df


@pytest.fixture(scope="module")
def cancer_profile(cancer: pd.DataFrame) -> dict:
    return make_profile(cancer, "train", "target", "classification")


@pytest.fixture(scope="module")
def shifted_profile(shifted: pd.DataFrame) -> dict:
    return make_profile(shifted, "raw", "target", "classification")


@pytest.fixture(scope="module")
def drift(cancer: pd.DataFrame, shifted: pd.DataFrame) -> dict:
    return make_drift(cancer, shifted, "target")


@pytest.fixture(scope="module")
def plain_report(cancer_profile: dict) -> str:
    return profile_report(cancer_profile)


@pytest.fixture(scope="module")
def drift_report(shifted_profile: dict, cancer_profile: dict, drift: dict) -> str:
    return profile_report(shifted_profile, drift=drift, reference=cancer_profile)


def test_profile_report_without_drift(plain_report: str):
    document = plain_report

    images = decoded_images(document)
    assert len(images) == 1 + 12  # class balance + first 12 columns
    text = visible_text(document)
    assert "Profile: train" in text
    assert "569 rows" in text
    assert "32 columns" in text
    assert "first 12 of 32 columns" in text
    for name in ("mean radius", "worst fractal dimension", "target", "<script>"):
        assert name in text  # every column is in the table
    assert "&lt;script&gt;" in document
    assert "<script>" not in document
    assert "east &amp; west" in document
    assert "Drift against" not in document


def test_profile_report_with_drift_and_reference(drift_report: str, drift: dict):
    document = drift_report

    images = decoded_images(document)
    # class balance + 12 columns (the emptied one skipped) + drift bars + 8 of 12 drifted overlays
    assert len(images) == 1 + 12 + 1 + 8
    text = visible_text(document)
    assert "Drift against breast_cancer v3 (@champion)" in text
    assert "Drift detected: 12 of 30 features drifted (policy: warn)" in text
    assert "1 without values, not plotted" in text
    assert "8 of 12 drifted features" in text
    drifted = {name for name, f in drift["features"].items() if f["drifted"]}
    assert len(drifted) == 12
    assert {"mean radius", "worst area", "<script>"} <= drifted
    # drifted features come first in the drift table, the most drifted first
    table = document[document.index("Drift against") :]
    rows = [table.index(f"<td>{html.escape(n)}</td>") for n in drift["features"]]
    positions = dict(zip(drift["features"], rows, strict=True))
    last_drifted = max(positions[n] for n in drifted)
    assert all(positions[n] > last_drifted for n in drift["features"] if n not in drifted)
    psi = {n: f["statistic"] for n, f in drift["features"].items() if f["method"] == "psi"}
    by_position = sorted((n for n in psi if n in drifted), key=positions.get)
    assert by_position == sorted(by_position, key=lambda n: -psi[n])
    # overlays are captioned with the feature names, the most drifted first
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", table)
    assert captions == by_position[:8]
    assert "<script>" not in document


def test_profile_report_stays_small_for_32_columns(plain_report: str, drift_report: str):
    assert len(parse(plain_report).images) == 13
    assert len(plain_report) < 300_000
    assert len(drift_report) < 1_000_000


def only(profile: dict, names: list[str]) -> dict:
    """The profile restricted to a few columns (fewer plots: a faster test)."""
    return {
        **profile,
        "n_columns": len(names),
        "columns": {n: profile["columns"][n] for n in names},
    }


def test_drift_overlay_for_a_categorical_feature(
    shifted_profile: dict, cancer_profile: dict, drift: dict
):
    names = ["mean radius", "mean area", "<script>", "target"]
    features = {n: drift["features"][n] for n in names[:3]}
    small = {**drift, "n_drifted": 2, "n_features": 3, "features": features}

    document = profile_report(only(shifted_profile, names), drift=small, reference=cancer_profile)

    assert len(decoded_images(document)) == 1 + 4 + 1 + 2
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", document)
    assert captions[-2:] == ["mean radius", "&lt;script&gt;"]
    assert "2 of 2 drifted features" in visible_text(document)


def test_profile_report_with_drift_but_no_reference(shifted_profile: dict, drift: dict):
    names = ["mean radius", "mean area", "target"]
    quiet = {
        **drift,
        "detected": False,
        "n_drifted": 0,
        "n_features": 2,
        "policy": "fail",
        "features": {
            n: {**drift["features"][n], "threshold": 100.0, "drifted": False} for n in names[:2]
        },
    }
    document = profile_report(only(shifted_profile, names), drift=quiet)

    assert len(decoded_images(document)) == 1 + 3 + 1
    text = visible_text(document)
    assert "No drift detected: 0 of 2 features drifted (policy: fail)" in text
    assert "No reference profile given: no distribution overlays" in text


def test_profile_report_regression_and_all_null_columns():
    data = load_diabetes(as_frame=True).frame[["age", "bmi", "target"]]
    data["empty"] = np.nan
    data["$dollars$ and \\frac"] = np.linspace(0, 1, len(data))  # not mathtext
    profile = make_profile(data, "raw", "target", "regression")
    assert profile["columns"]["empty"]["histogram"] is None

    document = profile_report(profile)

    # no balance chart for regression; the 4 columns with values
    assert len(decoded_images(document)) == 4
    text = visible_text(document)
    assert "The first 4 of 5 columns (1 without values, not plotted)." in text
    assert "$dollars$ and \\frac" in text


def test_profile_report_of_dates_free_text_and_ids():
    """Real profiles and drift (mlflow_pipeline.data.drift) of vega_datasets' Seattle weather
    (a date column, a later year with values that are not dates) and airports (an id, names
    set as free text)."""
    about = {"model": "weather", "version": "1", "alias": "champion", "profile_run": "r"}
    cfg = load_config(
        ["data=csv", "data.path=t.csv", "data.target=weather", "data.task=classification"]
    )
    weather = vega.seattle_weather().assign(date=lambda d: d["date"].dt.strftime("%Y-%m-%d"))
    reference = from_json(drifts.profile(weather.iloc[:1096], cfg))  # 2012-2014
    today = weather.iloc[1096:].copy()  # 2015
    today.iloc[:60, 0] = "n/a"
    current = drifts.profile(today, cfg, reference=reference)
    result = drifts.compare(reference, today, current, cfg, about=about)
    assert "date" in result["drifted"]

    document = profile_report(current, from_json(result), reference)

    text = visible_text(document)
    assert "datetime" in text
    assert "2015-03-02 .. 2015-12-31, every 1 day; 16.4% not dates" in text
    assert "16.4% not dates (reference: 0.0%); dates 2015-03-02..2015-12-31, after the " in text
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", document)
    assert "date" in captions[-len(result["drifted"]) :]  # the overlay over time
    # balance + 6 columns + drift bars + the drifted features' overlays
    assert len(decoded_images(document)) == 1 + 6 + 1 + len(result["drifted"])

    cfg = load_config(
        [
            "data=csv",
            "data.path=t.csv",
            "data.target=country",
            "data.task=classification",
            "+data.columns.name.role=text",
        ]
    )
    airports = vega.airports()[["iata", "name", "state", "latitude", "country"]]
    reference = from_json(drifts.profile(airports.iloc[::2], cfg))
    today = airports.iloc[1::2]
    current = drifts.profile(today, cfg, reference=reference)
    result = drifts.compare(reference, today, current, cfg, about=about)

    document = profile_report(current, from_json(result), reference)

    text = visible_text(document)
    assert "an id (1688 distinct in 1688 rows): not compared for drift" in text
    assert "The first 4 of 5 columns (1 id, not plotted)." in text
    assert "Not compared: iata (an id: 1688 distinct in 1688 rows)." in text
    assert re.search(r"\d+ to \d+ characters \(mean [\d.]+\)", text)
    assert "No drift detected: 0 of 4 features drifted" in text
    # balance + 4 columns (the id not plotted) + drift bars; nothing drifted: no overlays
    assert len(decoded_images(document)) == 1 + 4 + 1
