"""Dates and free text as model features inside the Pipeline: the transformers, a table with
every kind of column, the reload through the trusted loader, and a features option that drops
them with a notice."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io

from mlflow_pipeline import schemas
from mlflow_pipeline.config import PACKAGE_CONF, load_config
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.stages.features import DatetimeFeatures, FilledText, parse_dates
from mlflow_pipeline.stages.train import build_features, feature_columns, role_notices, train
from mlflow_pipeline.stages.validate import validate_data
from mlflow_pipeline.store import artifacts

WORDS = "great awful fine fast slow broken lovely late early cheap".split()


def orders(n: int, *, seed: int, first_id: int = 1000, start: str = "2021-01-01") -> pd.DataFrame:
    """Orders as they come: an id, a date (some missing), a free-text review (some missing),
    a count with missing values, a shop; whether an order is returned depends on the half of
    the year and on the words of its review."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=n, freq="D")
    review = [" ".join(rng.choice(WORDS, 6)) + f" order {i}" for i in range(first_id, first_id + n)]
    frame = pd.DataFrame(
        {
            "order_id": np.arange(first_id, first_id + n),
            "ordered": dates.strftime("%Y-%m-%d"),
            "review": review,
            "items": rng.integers(1, 9, n).astype(float),
            "shop": rng.choice(["north", "south", "east"], n),
        }
    )
    late = (dates.month >= 7).astype(int)
    said = {word: frame["review"].str.contains(word).astype(int) for word in ("broken", "lovely")}
    frame["returned"] = (late + said["broken"] - said["lovely"] >= 1).astype(int)
    frame.loc[frame.index % 11 == 0, "ordered"] = None
    frame.loc[frame.index % 7 == 0, "review"] = None
    frame.loc[frame.index % 5 == 0, "items"] = np.nan
    return frame


def config(*extra: str):
    return load_config(
        [
            "data=csv",
            "data.path=orders.csv",
            "data.target=returned",
            "data.task=classification",
            "model=logistic_regression",
            *extra,
        ]
    )


def fitted(cfg, frame: pd.DataFrame):
    out = validate_data(cfg, frame)
    return train(cfg, out["validated"], out["contract"])["model"], out


# ---- the transformers ------------------------------------------------------------------------


def test_dates_parse_from_text_of_several_formats_and_junk_is_missing():
    values = pd.Series(["2021-03-04", "2021/03/05 10:30", None, "soon", "12", "2021-03-06"])
    parsed = parse_dates(values)
    assert list(parsed.dt.day.astype("Int64")) == [4, 5, pd.NA, pd.NA, pd.NA, 6]
    assert parsed.iloc[1].hour == 10


def test_datetime_parts_and_days_since_the_earliest_training_date():
    train = pd.DataFrame({"d": ["2021-01-01", "2021-01-31", None]})
    step = DatetimeFeatures(parts=["year", "month", "dayofweek", "dayofyear", "elapsed"]).fit(train)
    new = pd.DataFrame({"d": ["2022-01-01", "not a date"]})
    out = step.transform(new)
    np.testing.assert_array_equal(out[0], [2022, 1, 5, 1, 365])  # a Saturday, a year on
    assert np.isnan(out[1]).all()
    assert list(step.get_feature_names_out()) == [
        "d_year",
        "d_month",
        "d_dayofweek",
        "d_dayofyear",
        "d_elapsed",
    ]
    # datetime64 values give the same numbers as their text
    as_dates = pd.DataFrame({"d": pd.to_datetime(["2022-01-01", None])})
    np.testing.assert_array_equal(step.transform(as_dates)[0], out[0])


def test_unknown_datetime_part_is_refused():
    with pytest.raises(ValueError, match="parts must be some of year"):
        DatetimeFeatures(parts=["weekday"]).fit(pd.DataFrame({"d": ["2021-01-01"]}))


def test_missing_text_becomes_empty_text():
    out = FilledText().fit_transform(pd.Series(["a b", None, np.nan]))
    assert list(out) == ["a b", "", ""]


# ---- a real table ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table():
    cfg = config()
    model, out = fitted(cfg, orders(730, seed=0))  # two years
    return {"cfg": cfg, "model": model, "out": out}


def test_dates_and_text_are_features_ids_are_not(table):
    contract = schemas.contract_from_yaml(table["out"]["contract"])
    roles = {n: r.role for n, r in schemas.contract_roles(contract).items()}
    assert roles == {
        "order_id": "id",
        "ordered": "datetime",
        "review": "text",
        "items": "integer",
        "shop": "categorical",
    }
    pipeline = table["model"].estimator
    assert list(pipeline.feature_names_in_) == ["ordered", "review", "items", "shop"]
    branches = {name: columns for name, _, columns in pipeline.named_steps["features"].transformers}
    assert branches == {
        "numeric": ["items"],
        "categorical": ["shop"],
        "datetime": ["ordered"],
        "text_review": "review",
    }
    tfidf = pipeline.named_steps["features"].named_transformers_["text_review"][-1]
    assert len(tfidf.vocabulary_) <= 200


def test_the_features_help_and_the_model_reloads_through_the_trusted_loader(table):
    cfg, validated = table["cfg"], table["out"]["validated"]
    pipeline = table["model"].estimator
    # New dates (a later year), new reviews, new ids, missing values everywhere.
    new = orders(365, seed=1, first_id=90_000, start="2023-01-01")
    new.loc[:3, "review"] = "never seen words like zebra"
    new.loc[4:6, ["ordered", "items", "shop"]] = None
    with mlflow.start_run():
        uri = artifacts.log_model(pipeline, table["model"].input_example)
    loaded = artifacts.load_trusted_model(uri)
    features = new[feature_columns(cfg, new)]
    np.testing.assert_array_equal(loaded.predict(features), pipeline.predict(features))
    accuracy = loaded.score(features, new["returned"])
    assert accuracy > 0.85
    # The same table without its dates and text learns much less: they carry the label.
    without = train(
        config("features.datetime.parts=[]", "features.text.mode=drop"),
        validated,
        table["out"]["contract"],
    )["model"].estimator
    assert list(without.feature_names_in_) == ["items", "shop"]
    assert without.score(features[["items", "shop"]], new["returned"]) < accuracy - 0.1
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert len(pyfunc.predict(features)) == len(new)


def test_a_features_option_that_drops_dates_and_text_says_so(caplog):
    cfg = config("features.datetime.parts=[]", "features.text.mode=drop")
    with caplog.at_level(logging.INFO, logger="mlflow_pipeline.stages.train"):
        model, _ = fitted(cfg, orders(120, seed=0))
    assert list(model.estimator.feature_names_in_) == ["items", "shop"]
    lines = [r.getMessage() for r in caplog.records if "not a feature" in r.getMessage()]
    assert len(lines) == 3
    assert lines[0].startswith("[train] column 'order_id' looks like an id")
    assert lines[1] == (
        "[train] column 'ordered' holds dates (in the validated data: every value present "
        "parses as a date (109 distinct)): not a feature with features 'standard'; set "
        "features.datetime.parts=[year,month,dayofweek,dayofyear,elapsed] to use it"
    )
    assert lines[2].startswith(
        "[train] column 'review' holds free text (in the validated data: free text: median"
    )
    assert lines[2].endswith(
        "not a feature with features 'standard'; set features.text.mode=tfidf to use it"
    )


def test_the_notice_hints_are_overrides_that_work():
    cfg = config(
        "features.datetime.parts=[]",
        "features.text.mode=drop",
        "features.datetime.parts=[year,month,dayofweek,dayofyear,elapsed]",
        "features.text.mode=tfidf",
    )
    assert schemas.roles_left_out(cfg.features) == {"id", "ignore"}


def test_a_config_recorded_before_these_keys_leaves_dates_and_text_out():
    """Models trained before dates and text were features: their recorded config, composed
    as scoring composes it, leaves them out (so scoring does not require those columns)."""
    from omegaconf import OmegaConf

    from mlflow_pipeline.config import PipelineConfig

    recorded = OmegaConf.to_container(config(), resolve=True)
    del recorded["features"]["datetime"], recorded["features"]["text"]
    cfg = OmegaConf.merge(OmegaConf.structured(PipelineConfig), OmegaConf.create(recorded))
    assert schemas.roles_left_out(cfg.features) == {"id", "ignore", "datetime", "text"}
    assert schemas.roles_left_out({"name": "plain"}) == {"id", "ignore", "datetime", "text"}
    contract = schemas.infer_contract(orders(60, seed=0), "returned", "classification")
    assert schemas.non_features(contract, cfg.features) == ["order_id", "ordered", "review"]
    assert schemas.non_features(contract, config().features) == ["order_id"]
    assert schemas.new_values_expected(contract) == ["order_id", "ordered", "review"]


def test_a_role_set_in_config_makes_a_column_text():
    cfg = config("+data.columns.shop.role=text", "features.text.max_features=2")
    model, _ = fitted(cfg, orders(120, seed=0))
    branches = {name for name, _, _ in model.estimator.named_steps["features"].transformers}
    assert {"text_shop", "text_review"} <= branches
    tfidf = model.estimator.named_steps["features"].named_transformers_["text_shop"][-1]
    assert len(tfidf.vocabulary_) == 2


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["features.datetime.parts=[weekday]"], r"features\.datetime\.parts of 'standard'"),
        (["features.text.max_features=0"], r"features\.text of 'standard'.*max_features 0"),
        (["features.text.mode=bag"], r"features\.text of 'standard': mode 'bag'"),
    ],
)
def test_a_bad_datetime_or_text_option_is_a_config_error(overrides, match):
    cfg = config(*overrides)
    with pytest.raises(ConfigError, match=match):
        build_features(cfg.features, [], [], ["ordered"], ["review"])


def test_only_inferred_ids_get_a_notice_when_dates_are_features():
    roles = {
        "when": schemas.ColumnRole("datetime", "seen"),
        "ref": schemas.ColumnRole("id", "x"),
        "code": schemas.ColumnRole("id", "data.columns.code.role", inferred=False),
    }
    notices = role_notices(roles, config().features)
    assert [line.split(":")[0] for line in notices] == ["column 'ref' looks like an id (x)"]


@pytest.mark.parametrize("features", ["standard", "trees"])
def test_every_model_option_on_dates_and_text_needs_only_trusted_types(features: str):
    frame = orders(120, seed=0)
    needed: set[str] = set()
    for model in sorted(p.stem for p in (PACKAGE_CONF / "model").glob("*.yaml")):
        cfg = config(f"model={model}", f"features={features}")
        estimator = fitted(cfg, frame)[0].estimator
        needed |= set(skops.io.get_untrusted_types(data=skops.io.dumps(estimator)))
    assert "mlflow_pipeline.stages.features.DatetimeFeatures" in needed
    assert needed <= artifacts.TRUSTED_TYPES, sorted(needed - artifacts.TRUSTED_TYPES)


def test_seattle_weather_rain_is_better_predicted_with_dates():
    """A real public table (vega_datasets, bundled): whether a day is labelled rain depends on
    the season and on the year the labels were written, which only the date carries."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from vega_datasets import data

    weather = data.seattle_weather()
    frame = weather.assign(
        date=weather["date"].dt.strftime("%Y-%m-%d"),
        rain=(weather["weather"] == "rain").astype(int),
    ).drop(columns="weather")
    overrides = ("data.target=rain",)
    scores = {}
    for name, extra in (("with dates", ()), ("without", ("features.datetime.parts=[]",))):
        cfg = config(*overrides, *extra)
        out = validate_data(cfg, frame)
        fit, test = train_test_split(
            out["validated"], test_size=0.2, random_state=42, stratify=out["validated"]["rain"]
        )
        model = train(cfg, fit, out["contract"])["model"].estimator
        proba = model.predict_proba(test[list(model.feature_names_in_)])[:, 1]
        scores[name] = roc_auc_score(test["rain"], proba)
    assert scores["with dates"] > 0.85
    assert scores["with dates"] > scores["without"] + 0.1, scores


def test_a_datetime64_column_is_dates_without_a_role():
    from mlflow_pipeline.stages.train import build_pipeline

    frame = pd.DataFrame(
        {"at": pd.date_range("2021-01-01", periods=4, freq="h"), "n": [1.0, 2.0, 3.0, 4.0]}
    )
    pipeline = build_pipeline(config(), frame)
    branches = {name: cols for name, _, cols in pipeline.named_steps["features"].transformers}
    assert branches == {"numeric": ["n"], "datetime": ["at"]}
    parts = DatetimeFeatures(parts=["hour"]).fit_transform(frame[["at"]])
    assert parts[:, 0].tolist() == [0, 1, 2, 3]


def test_day_first_dates_are_read_day_first_in_training_profile_and_a_one_row_request():
    """02.01.2014 in a column of day-first dates is 2 January: pandas alone read the days up to
    12 as months (132 of 365 dates of a year wrong) and a one-row request as month-first."""
    from mlflow_pipeline.dates import parse_dates as profile_dates

    days = pd.date_range("2014-01-01", "2014-12-31")
    written = pd.Series(days.strftime("%d.%m.%Y"))
    assert (parse_dates(written).dt.tz_localize(None) == days).all()
    assert (profile_dates(written) == days).all()
    us = pd.Series(days.strftime("%m/%d/%Y"))
    assert (parse_dates(us).dt.tz_localize(None) == days).all()

    fitted = DatetimeFeatures(parts=["month", "day"]).fit(pd.DataFrame({"date": written}))
    assert fitted.dayfirst_ == [True]
    one_row = fitted.transform(pd.DataFrame({"date": ["05.01.2014"]}))
    assert one_row.tolist() == [[1.0, 5.0]]
    loaded = skops.io.loads(
        skops.io.dumps(fitted), trusted=skops.io.get_untrusted_types(data=skops.io.dumps(fitted))
    )
    assert loaded.transform(pd.DataFrame({"date": ["05.01.2014"]})).tolist() == [[1.0, 5.0]]
