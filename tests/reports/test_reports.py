"""HTML stage reports: real data, real models, real matplotlib rendering, decoded images."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import subprocess
import sys
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.model_selection import train_test_split

from mlflow_pipeline.reports import (
    evaluation_report,
    profile_report,
    promotion_report,
    validation_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


# ---------------------------------------------------------------------------------------------
# Parsing and checking rendered HTML
# ---------------------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def parse(document: str) -> _Collector:
    collector = _Collector()
    collector.feed(document)
    collector.close()
    assert document.startswith("<!DOCTYPE html>")
    assert collector.tags[:4] == ["html", "head", "meta", "title"]
    assert "style" in collector.tags
    assert "script" not in collector.tags
    assert "http://" not in document
    assert "https://" not in document
    return collector


def decoded_images(document: str) -> list[np.ndarray]:
    """Every <img> must be an inline PNG that decodes to a non-blank picture."""
    arrays = []
    for attrs in parse(document).images:
        src = attrs["src"]
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        raw = base64.b64decode(src[len(prefix) :], validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        pixels = mpimg.imread(io.BytesIO(raw))
        assert pixels.ndim == 3
        assert pixels.shape[0] >= 100
        assert pixels.shape[1] >= 150
        assert pixels[..., :3].std() > 0.01  # something was drawn
        assert attrs["alt"]
        arrays.append(pixels)
    return arrays


def visible_text(document: str) -> str:
    return " ".join(parse(document).text)


@pytest.fixture(autouse=True)
def _no_open_figures():
    yield
    assert plt.get_fignums() == []


# ---------------------------------------------------------------------------------------------
# Inputs shaped like the stages' outputs
# ---------------------------------------------------------------------------------------------


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


def from_json(document: dict) -> dict:
    """The stages hand these dicts over as JSON artifacts: render what comes back from JSON."""
    return json.loads(json.dumps(document))


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


def count(document: str) -> int:
    return len(parse(document).images)


# ---------------------------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def validation_result(**changes) -> dict:
    result = {
        "stage": "validate",
        "dataset": "raw",
        "rows": 1000,
        "rows_out": 990,
        "passed": False,
        "checks": [
            {
                "column": "income",
                "check": "not_null",
                "severity": "warning",
                "status": "warning",
                "failing_rows": 25,
                "examples": ["NaN"],
            },
            {
                "column": "age",
                "check": "in_range(0, 120)",
                "severity": "error",
                "status": "failed",
                "failing_rows": 10,
                "examples": ["-3", "500", "<b>x</b>"],
            },
            {
                "column": "zip",
                "check": "str_length(5)",
                "severity": "error",
                "status": "quarantined",
                "failing_rows": 4,
                "examples": ["1234"],
            },
            {
                "column": "id",
                "check": "unique",
                "severity": "error",
                "status": "passed",
                "failing_rows": 0,
                "examples": [],
            },
        ],
        "quarantine": {
            "enabled": True,
            "max_fraction": 0.05,
            "rows": 10,
            "fraction": 0.01,
            "artifact": "quarantine/raw.csv",
        },
    }
    result.update(changes)
    return result


def test_validation_report_failed():
    document = validation_report(validation_result())

    assert len(decoded_images(document)) == 1
    text = visible_text(document)
    assert "Failed: 1 check failed" in text
    assert "1,000 rows in, 990 rows out" in text
    assert "quarantine/raw.csv" in text
    assert "in_range(0, 120)" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in document
    checks = document[document.index("<h2>Checks</h2>") :]
    order = [checks.index(f"<td>{c}</td>") for c in ("age", "zip", "income", "id")]
    assert order == sorted(order)  # failed, quarantined, warning, passed
    assert '<tr class="st-failed"><td>age</td>' in checks


def test_validation_report_passed_with_warnings_and_no_quarantine():
    result = validation_result(passed=True, quarantine=None)
    result["checks"] = [c for c in result["checks"] if c["status"] in ("warning", "passed")]

    document = validation_report(result)

    assert len(decoded_images(document)) == 1
    text = visible_text(document)
    assert "Passed with warnings: 1 check (1 warning)" in text
    assert "Quarantine is not configured" in text


def test_validation_report_clean_pass_has_no_chart():
    result = validation_result(passed=True, rows_out=1000)
    result["checks"] = [c for c in result["checks"] if c["status"] == "passed"]
    result["quarantine"]["rows"] = 0
    result["quarantine"]["fraction"] = 0.0

    document = validation_report(result)

    assert count(document) == 0
    assert "Passed: all 1 check passed" in visible_text(document)
    assert "Failing rows per check" not in document


def test_validation_report_failed_by_quarantine_over_its_limit():
    result = validation_result(rows_out=900)
    result["checks"] = [c for c in result["checks"] if c["status"] != "failed"]
    result["quarantine"].update(rows=100, fraction=0.1)

    document = validation_report(result)

    text = visible_text(document)
    assert "Failed: quarantined 10.0% of rows, over the 5.0% limit" in text
    assert len(decoded_images(document)) == 1


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def classification_evaluation(frame: pd.DataFrame, target: str, thresholds: dict) -> dict:
    features = frame.drop(columns=[target])
    train_x, test_x, train_y, test_y = train_test_split(
        features, frame[target], test_size=0.3, random_state=0, stratify=frame[target]
    )
    model = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=0)
    model.fit(train_x, train_y)
    from sklearn import metrics as skm

    proba = model.predict_proba(test_x)
    y_pred = model.predict(test_x)
    binary = proba.shape[1] == 2
    return from_json(
        {
            "task": "classification",
            "model": "RandomForestClassifier",
            "metrics": {
                "accuracy": float(skm.accuracy_score(test_y, y_pred)),
                "roc_auc": float(
                    skm.roc_auc_score(test_y, proba[:, 1])
                    if binary
                    else skm.roc_auc_score(test_y, proba, multi_class="ovr")
                ),
            },
            "thresholds": thresholds,
            "y_true": test_y.tolist(),
            "y_pred": y_pred.tolist(),
            "proba": proba.tolist(),
            "classes": model.classes_.tolist(),
            "feature_importance": dict(
                zip(features.columns, model.feature_importances_.tolist(), strict=True)
            ),
        }
    )


@pytest.fixture(scope="module")
def binary_evaluation() -> dict:
    frame = load_breast_cancer(as_frame=True).frame
    return classification_evaluation(frame, "target", {"roc_auc": {"min": 0.75, "max": None}})


def test_evaluation_report_binary(binary_evaluation: dict):
    document = evaluation_report(binary_evaluation)

    images = decoded_images(document)
    assert len(images) == 4  # confusion matrix, ROC, PR, importance
    text = visible_text(document)
    assert "Evaluation: RandomForestClassifier" in text
    assert "All 1 threshold met" in text
    assert "Positive class: 1." in text
    assert "The 20 most important of 30 features." in text
    top = max(binary_evaluation["feature_importance"].items(), key=lambda kv: kv[1])[0]
    assert top in text


def test_evaluation_report_failed_threshold_without_proba_or_importance(binary_evaluation: dict):
    evaluation = {
        **binary_evaluation,
        "proba": None,
        "feature_importance": None,
        "thresholds": {"roc_auc": {"min": 0.999, "max": None}, "f1": {"min": 0.5, "max": None}},
    }

    document = evaluation_report(evaluation)

    assert len(decoded_images(document)) == 1  # confusion matrix only
    text = visible_text(document)
    assert "Thresholds not met" in text
    assert "< min 0.999" in text
    assert "f1 (missing)" in text
    assert "ROC and PR curves skipped" in text
    assert "not available for this model" in text


def test_evaluation_report_multiclass_one_vs_rest():
    frame = load_iris(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "setosa", 1: "versicolor", 2: "<virginica>"})
    evaluation = classification_evaluation(frame, "target", {})

    document = evaluation_report(evaluation)

    assert len(decoded_images(document)) == 4
    text = visible_text(document)
    assert "One-vs-rest curve per class." in text
    assert "No thresholds configured" in text
    assert "&lt;virginica&gt;" in document
    assert "<virginica>" not in document


def test_evaluation_report_regression():
    data = load_diabetes(as_frame=True)
    train_x, test_x, train_y, test_y = train_test_split(
        data.data, data.target, test_size=0.3, random_state=0
    )
    model = RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0)
    model.fit(train_x, train_y)
    y_pred = model.predict(test_x)
    residual = test_y.to_numpy() - y_pred
    evaluation = {
        "task": "regression",
        "model": "RandomForestRegressor",
        "metrics": {"rmse": float(np.sqrt(np.mean(residual**2))), "r2": 0.4},
        "thresholds": {"r2": {"min": 0.2, "max": None}},
        "y_true": test_y.tolist(),
        "y_pred": y_pred.tolist(),
        "proba": None,
        "classes": None,
        "feature_importance": dict(
            zip(data.data.columns, model.feature_importances_.tolist(), strict=True)
        ),
    }

    document = evaluation_report(evaluation)

    assert len(decoded_images(document)) == 4  # residuals, pred vs actual, histogram, importance
    text = visible_text(document)
    assert "Residuals" in text
    assert "All 1 threshold met" in text
    assert "Confusion matrix" not in text
    assert "bmi" in text


# ---------------------------------------------------------------------------------------------
# Promotion
# ---------------------------------------------------------------------------------------------


def promotion(**changes) -> dict:
    decision = {
        "promote": True,
        "reason": "challenger roc_auc 0.99 beats champion 0.98 by >= 0.005",
        "metric": "roc_auc",
        "greater_is_better": True,
        "challenger_score": 0.99,
        "champion_score": 0.98,
        "champion_version": "1",
        "model_name": "breast_cancer",
        "version": "2",
        "champion_version_after": "2",
    }
    decision.update(changes)
    return decision


def test_promotion_report_promoted():
    document = promotion_report(promotion())

    assert len(decoded_images(document)) == 1
    text = visible_text(document)
    assert "Promoted: version 2 is the champion now" in text
    assert "challenger roc_auc 0.99 beats champion 0.98 by &gt;= 0.005" in document
    assert "0.01" in text  # the difference


def test_promotion_report_not_promoted_and_first_version():
    rejected = promotion_report(
        promotion(promote=False, reason="<no gain>", champion_version_after="1")
    )
    assert "Not promoted: the champion stays version 1" in visible_text(rejected)
    assert "&lt;no gain&gt;" in rejected

    first = promotion_report(
        promotion(
            champion_score=None,
            champion_version=None,
            reason="no champion yet",
            version="1",
            champion_version_after="1",
        )
    )
    (image,) = decoded_images(first)
    assert image.shape[0] >= 200
    assert "no champion yet" in visible_text(first)


# ---------------------------------------------------------------------------------------------
# Import cost
# ---------------------------------------------------------------------------------------------


def test_importing_reports_does_not_import_matplotlib():
    code = (
        "import sys, mlflow_pipeline.reports; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'sklearn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
