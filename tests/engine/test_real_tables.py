"""A table as real ones come: an id, a year, a count with missing values, a price, a city and
a free-text description. The model loads through plain MLflow and scores new rows."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline import schemas
from mlflow_pipeline.apps import score
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.store import artifacts

WORDS = "bright quiet spacious cosy renovated sunny modern old charming garden view".split()


def listings(n: int, *, seed: int, first_id: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    year = rng.integers(1950, 2024, n)
    price = rng.normal(300.0, 80.0, n).round(2)
    rooms = rng.integers(1, 6, n).astype(float)
    rooms[::6] = np.nan  # a count with missing values: pandas reads it as float
    description = [
        " ".join(rng.choice(WORDS, 8)) + f" flat number {i}" for i in range(first_id, first_id + n)
    ]
    label = ((year - 1987) / 20 + (price - 300) / 60 + rng.normal(0, 0.3, n) > 0).astype(int)
    return pd.DataFrame(
        {
            "listing_id": np.arange(first_id, first_id + n),
            "year": year,
            "rooms": rooms,
            "price": price,
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "description": description,
            "sold": label,
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, open_store):
    root = tmp_path_factory.mktemp("real")
    csv = root / "listings.csv"
    listings(240, seed=0).to_csv(csv, index=False)
    with open_store(root) as store:
        cfg = store.config(
            "data=csv",
            f"data.path={csv}",
            "data.name=listings",
            "data.target=sold",
            "data.task=classification",
            "model=logistic_regression",
            "model.max_iter=200",
        )
        logger = logging.getLogger("mlflow_pipeline.stages.train")
        records: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: records.append(record.getMessage())
        logger.addHandler(handler)
        previous = logger.level
        logger.setLevel(logging.INFO)
        try:
            result = run_pipeline(cfg)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(previous)
        yield {"store": store, "csv": csv, "result": result, "log": records, "root": root}


@pytest.fixture
def champion(trained) -> str:
    """The champion's URI, with this process pointed at the module's store (each test gets
    its own store otherwise; it is reset after the test)."""
    mlflow.set_tracking_uri(trained["store"].uri)
    mlflow.set_registry_uri(trained["store"].uri)
    return "models:/listings@champion"


def test_contract_keeps_integers_and_records_roles():
    frame = listings(240, seed=0)
    contract = schemas.infer_contract(frame, "sold", "classification")
    dtypes = {n: str(c.dtype) for n, c in contract.columns.items()}
    assert dtypes["year"] == "int64"
    assert dtypes["listing_id"] == "int64"
    assert dtypes["rooms"] == "float64"  # nullable: MLflow's long cannot hold a missing value
    roles = {n: r.role for n, r in schemas.contract_roles(contract).items()}
    assert roles == {
        "listing_id": "id",
        "year": "integer",
        "rooms": "integer",
        "price": "numeric",
        "city": "categorical",
        "description": "text",
    }
    again = schemas.contract_from_yaml(schemas.contract_to_yaml(contract))
    assert schemas.contract_roles(again) == schemas.contract_roles(contract)
    assert schemas.non_features(again) == ["listing_id"]
    assert schemas.new_values_expected(again) == ["listing_id", "description"]


def test_the_run_says_which_columns_are_not_features(trained):
    lines = [line for line in trained["log"] if "not a feature" in line]
    assert len(lines) == 1  # the description is a feature now (a TF-IDF of its words)
    assert lines[0] == (
        "[train] column 'listing_id' looks like an id (in the validated data: 240 distinct in "
        "240 rows): not a "
        "feature; set +data.columns.listing_id.role=categorical to use it"
    )


def test_plain_pyfunc_loads_and_predicts_the_training_csv(trained, champion):
    model = mlflow.pyfunc.load_model(champion)
    inputs = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert inputs == {
        "year": "long",
        "rooms": "double",
        "price": "double",
        "city": "string",
        "description": "string",
    }
    frame = pd.read_csv(trained["csv"])
    assert frame["year"].dtype == "int64"
    assert len(model.predict(frame)) == len(frame)
    missing = frame.head(3).assign(rooms=np.nan)  # rows with a missing integer
    assert len(model.predict(missing)) == 3


def test_score_takes_new_ids_and_new_text(trained, tmp_path: Path):
    batch = listings(30, seed=1, first_id=9000).drop(columns="sold")
    path = tmp_path / "batch.csv"
    batch.to_csv(path, index=False)
    out = tmp_path / "scored.csv"
    result = score.score("models:/listings@champion", path, out, tracking_uri=trained["store"].uri)
    assert result.rows == 30
    # The model never needs its ids: a batch without them scores too.
    path.write_text(batch.drop(columns=["listing_id"]).to_csv(index=False))
    assert score.score("models:/listings@champion", path, out, tracking_uri=trained["store"].uri)


def test_the_model_is_trained_on_features_only(champion):
    model = artifacts.load_trusted_model(champion)
    assert list(model.feature_names_in_) == ["year", "rooms", "price", "city", "description"]


def test_a_role_in_config_overrides_the_inferred_one(make_config):
    frame = listings(240, seed=0)
    cfg = make_config(
        "data=csv",
        "data.path=x.csv",
        "data.target=sold",
        "data.task=classification",
        "+data.columns.listing_id.role=categorical",
        "+data.columns.year.role=numeric",
    )
    from mlflow_pipeline.stages.validate import validate_data

    contract = schemas.contract_from_yaml(validate_data(cfg, frame)["contract"])
    roles = schemas.contract_roles(contract)
    assert roles["listing_id"].role == "categorical"
    assert roles["listing_id"].inferred is False
    assert pd.api.types.is_string_dtype(contract.columns["listing_id"].dtype.type)
    assert str(contract.columns["year"].dtype) == "float64"


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"nope": {"role": "id"}}, r"data\.columns\.nope: no feature column 'nope'"),
        ({"year": {"role": "date"}}, r"data\.columns\.year\.role: 'date' is not a role"),
    ],
)
def test_a_bad_role_in_config_is_a_config_error(columns, match):
    from mlflow_pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        schemas.infer_contract(listings(60, seed=0), "sold", "classification", columns)
