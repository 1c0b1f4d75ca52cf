"""A user's own CSV through `mlflow-pipeline` (data=csv), and a data contract written by
`mlflow-pipeline-schema`, edited by nobody, then enforced."""

from __future__ import annotations

import io

import pandas as pd
import pandera.pandas as pa
import pytest

from .helpers import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    STAGES,
    VENV_BIN,
    Store,
    assert_clean_failure,
    assert_ok,
    assert_stage_run_complete,
    write_classification_csv,
    write_regression_csv,
)

pytestmark = pytest.mark.slow

CUSTOMERS = ("data=csv", "data.target=label", "data.task=classification")


def _only_pipeline(store: Store, status: str = "FINISHED") -> dict:
    [pipeline] = store.runs_of_kind("pipeline")
    assert pipeline.info.status == status, pipeline.data.tags.get("pipeline.error")
    return store.stage_runs(pipeline.info.run_id)


@pytest.mark.parametrize(
    ("task", "write", "target", "model", "metrics", "promotion_metric"),
    [
        pytest.param(
            "classification",
            write_classification_csv,
            "label",
            "customers",
            CLASSIFICATION_METRICS,
            "roc_auc",
            id="classification",
        ),
        pytest.param(
            "regression",
            write_regression_csv,
            "price",
            "houses",
            REGRESSION_METRICS,
            "rmse",
            id="regression",
        ),
    ],
)
def test_user_csv_trains_and_registers(
    store: Store,
    task: str,
    write,
    target: str,
    model: str,
    metrics: set[str],
    promotion_metric: str,
) -> None:
    write(store.root / f"{model}.csv")
    # A relative data.path is read from the directory the user runs in.
    result = store.pipeline(
        "data=csv",
        f"data.path={model}.csv",
        f"data.target={target}",
        f"data.task={task}",
        "model.max_iter=30",
    )
    assert_ok(result)

    stages = _only_pipeline(store)
    assert sorted(stages) == sorted(STAGES)
    for run in stages.values():
        assert_stage_run_complete(store, run, run.data.tags["pipeline.run_id"])
    assert stages["ingest"].data.metrics["rows.output.raw"] == 300
    assert metrics <= set(stages["evaluate"].data.metrics)
    contract = pa.DataFrameSchema.from_yaml(
        store.text(stages["validate"].info.run_id, "contract.yaml")
    )
    categorical = "plan" if task == "classification" else "district"
    assert contract.columns[categorical].nullable
    assert not pd.api.types.is_numeric_dtype(contract.columns[categorical].dtype.type)
    assert not contract.columns[target].nullable

    # The experiment and the registered model are named after the file.
    experiment = store.client.get_experiment(stages["train"].info.experiment_id)
    assert experiment.name == model
    assert store.version_numbers(model) == ["1"]
    assert store.alias(model, "champion") == "1"
    report = store.promotion(stages["register"].info.run_id)
    assert report["metric"] == promotion_metric
    assert report["promote"] is True


def test_inferred_schema_file_is_enforced(store: Store) -> None:
    write_classification_csv(store.root / "customers.csv")
    written = store.run(
        VENV_BIN / "mlflow-pipeline-schema",
        "-o",
        "schema.yaml",
        *CUSTOMERS,
        "data.path=customers.csv",
    )
    assert_ok(written)
    schema = pa.DataFrameSchema.from_yaml(store.root / "schema.yaml")
    assert list(schema.columns) == ["income", "age", "plan", "label"]
    assert schema.strict is True
    for numeric in ("income", "age"):
        assert str(schema.columns[numeric].dtype) == "float64"
        assert schema.columns[numeric].nullable
    assert schema.columns["plan"].nullable
    assert not schema.columns["label"].nullable

    good = store.pipeline(
        *CUSTOMERS, "data.path=customers.csv", "data.schema=schema.yaml", "model.max_iter=30"
    )
    assert_ok(good)
    stages = _only_pipeline(store)
    contract = pa.DataFrameSchema.from_yaml(
        store.text(stages["validate"].info.run_id, "contract.yaml")
    )
    assert list(contract.columns) == list(schema.columns)
    assert store.alias("customers", "champion") == "1"

    # Next month's file: a numeric column with text in it, and a column nobody declared.
    write_classification_csv(
        store.root / "next" / "customers.csv", seed=7, text_in_numeric_rows=4, extra_column=True
    )
    bad = store.pipeline(
        *CUSTOMERS, "data.path=next/customers.csv", "data.schema=schema.yaml", "model.max_iter=30"
    )
    assert_clean_failure(bad, "[validate]", "'raw'", "'income'", "4 row(s)", "'notes'")
    assert bad.stderr.count("mlflow-pipeline: error:") == 1

    failed = [p for p in store.runs_of_kind("pipeline") if p.info.status == "FAILED"]
    assert len(failed) == 1
    failed_stages = store.stage_runs(failed[0].info.run_id)
    assert sorted(failed_stages) == ["ingest", "profile", "validate"]
    validate = failed_stages["validate"]
    assert validate.info.status == "FAILED"
    assert "'income'" in validate.data.tags["pipeline.error"]
    failures = pd.read_csv(io.StringIO(store.text(validate.info.run_id, "failures/raw.csv")))
    assert {"income", "notes"} <= set(failures["column"].dropna()) | set(
        failures["failure_case"].dropna()
    )
    assert store.version_numbers("customers") == ["1"]
    assert store.alias("customers", "champion") == "1"


def test_quoted_hydra_options_survive_mlflow_run(store: Store) -> None:
    """`-P hydra_options` keeps the quotes Hydra needs: a ';'-separated file in a folder whose
    name has a space and a comma."""
    folder = store.root / "my data, v2"
    comma = write_classification_csv(folder / "comma.csv")
    semicolon = folder / "semicolon.csv"
    pd.read_csv(comma).to_csv(semicolon, sep=";", index=False)
    result = store.mlflow_run(
        hydra_options=" ".join(
            (
                *CUSTOMERS,
                f"data.path='{semicolon}'",
                "+data.read_options.sep=';'",
                "model=logistic_regression",
                "model.max_iter=200",
            )
        ),
        experiment_name="quoted",
    )
    assert_ok(result)
    stages = _only_pipeline(store)
    assert set(stages) == set(STAGES)
    assert store.alias("semicolon", "champion") == "1"


def test_mlflow_refusing_the_store_is_one_clean_message(store: Store) -> None:
    result = store.pipeline(*CUSTOMERS, "data.path=x.csv", "tracking.uri=nosuchscheme://x")
    assert_clean_failure(result, "mlflow-pipeline: error: MLflow:", "nosuchscheme")
