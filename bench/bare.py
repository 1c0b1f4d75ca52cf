"""The baseline: the pipeline's work in one plain Python process, without the framework or MLflow.

Same work as ``mlflow-pipeline data=csv features=standard model=hist_gradient_boosting``:
read the CSV, coerce and check it like the inferred data contract does (floats for numeric
columns, pandas strings for the rest, target not null, at least 2 classes, not empty), a
stratified split with the same test_size and seed, the same sklearn Pipeline (conf/features/
standard.yaml + conf/model/hist_gradient_boosting.yaml), the same test-set metrics, and the
fitted model saved to disk with skops (the framework's format), so persistence is paid by both.

    python bench/bare.py --data file.csv --target label --model-out model.skops
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import skops.io  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402


def check(df: pd.DataFrame, target: str) -> pd.DataFrame:
    """The inferred contract in plain pandas: coerce dtypes, then the dataset-level checks."""
    out = {}
    for name in df.columns:
        col = df[name]
        if name == target:
            out[name] = col.astype("int64") if pd.api.types.is_integer_dtype(col) else col
        elif pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            out[name] = col.astype("float64")
        else:
            out[name] = col.astype("str")
    df = pd.DataFrame(out)
    if len(df) == 0:
        raise SystemExit("no rows")
    if df[target].isna().any():
        raise SystemExit(f"target {target!r} has missing values")
    if df[target].nunique(dropna=True) < 2:
        raise SystemExit(f"target {target!r} has fewer than 2 classes")
    return df


def build(
    numeric: list[str], categorical: list[str], seed: int, learning_rate: float = 0.1
) -> Pipeline:
    features = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="__missing__"),
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist", min_frequency=5, sparse_output=False
                    ),
                ),
                categorical,
            ),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    model = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=learning_rate,
        max_depth=None,
        max_leaf_nodes=31,
        random_state=seed,
    )
    return Pipeline([("features", features), ("model", model)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--target", default="label")
    parser.add_argument("--model-out", required=True)
    parser.add_argument("--test-size", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    args = parser.parse_args()
    times: dict[str, float] = {"imports": time.perf_counter() - STARTED}

    t = time.perf_counter()
    raw = pd.read_csv(args.data)
    times["read_csv"] = time.perf_counter() - t

    t = time.perf_counter()
    data = check(raw, args.target)
    times["check"] = time.perf_counter() - t

    t = time.perf_counter()
    train, test = train_test_split(
        data, test_size=args.test_size, random_state=args.seed, stratify=data[args.target]
    )
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    times["split"] = time.perf_counter() - t

    t = time.perf_counter()
    columns = [c for c in train.columns if c != args.target]
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(train[c])]
    categorical = [c for c in columns if c not in numeric]
    pipeline = build(numeric, categorical, args.seed, args.learning_rate)
    pipeline.fit(train[columns], train[args.target])
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    y_true = test[args.target]
    y_pred = pipeline.predict(test[columns])
    proba = pipeline.predict_proba(test[columns])
    scores = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, pos_label=pipeline.classes_[-1])),
        "roc_auc": float(skm.roc_auc_score(y_true, proba[:, 1])),
        "log_loss": float(skm.log_loss(y_true, proba, labels=list(pipeline.classes_))),
    }
    times["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    skops.io.dump(pipeline, args.model_out)
    times["save_model"] = time.perf_counter() - t
    times["total_in_process"] = time.perf_counter() - STARTED

    iterations = int(pipeline[-1].n_iter_)  # early stopping: the work depends on the parameters
    timings = {k: round(v, 3) for k, v in times.items()}
    print(json.dumps({"scores": scores, "times": timings, "iterations": iterations}))
    assert np.isfinite(scores["roc_auc"])


if __name__ == "__main__":
    main()
