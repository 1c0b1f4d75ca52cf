"""score: the scoring gate (training contract, target optional, seen_in_training), the
prediction columns, the all-or-nothing output file, and ``score`` end to end on a version
registered in-process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from mlflow_pipeline.apps import score
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import ConfigError, DataError, DataValidationError, PipelineError
from mlflow_pipeline.schemas import contract_from_yaml, contract_to_yaml, infer_contract
from tests.helpers import csv_overrides, mixed_frame

TARGET = "churned"
FAST = ["model=logistic_regression", "model.max_iter=200", "registry.model_name=customers"]


@pytest.fixture
def cfg(make_config, mixed_csv):
    return make_config(*csv_overrides(mixed_csv))


@pytest.fixture
def train() -> pd.DataFrame:
    return mixed_frame(60)


@pytest.fixture
def gate(cfg, train):
    """The scoring gate of a contract inferred from ``train``, after a YAML round trip (as the
    validate stage logs it)."""
    contract = contract_from_yaml(contract_to_yaml(infer_contract(train, TARGET, "classification")))
    columns = score.categorical_features(contract, train, TARGET, ["customer_id"])
    return score.scoring_gate(contract, cfg, score.seen_categories(train, columns))


def rows(n: int = 5) -> pd.DataFrame:
    return mixed_frame(n, seed=3).drop(columns=[TARGET])


def test_categorical_features_are_the_string_features(train):
    contract = infer_contract(train, TARGET, "classification")
    found = score.categorical_features(contract, train, TARGET, ["customer_id"])
    assert found == ["city", "plan"]
    seen = score.seen_categories(train, found)
    assert seen == {"city": {"paris", "lyon", "nice"}, "plan": {"basic", "pro"}}


def test_rows_without_the_target_pass_and_are_coerced_as_in_training(gate):
    frame = rows()
    frame["age"] = frame["age"].astype(int).astype(str)  # "42": coerced to float, as in training
    result = score.validate_input(frame, gate)
    assert result.frame["age"].dtype == "float64"
    assert result.warning is None


def test_an_integer_column_may_miss_a_value_but_not_hold_a_fraction(cfg):
    """The contract keeps whole-number columns int64, which holds no missing value; the model
    imputes them, so a row to score may miss one. A fraction is refused, not truncated."""
    train = mixed_frame(60).assign(children=lambda f: np.arange(len(f)) % 4)
    contract = contract_from_yaml(contract_to_yaml(infer_contract(train, TARGET, "classification")))
    assert str(contract.columns["children"].dtype) == "int64"
    gate = score.scoring_gate(contract, cfg, {})
    batch = rows(3).assign(children=[2.0, np.nan, 3.0])
    frame = score.validate_input(batch, gate).frame
    assert frame["children"].tolist()[0::2] == [2, 3]
    assert frame["children"].isna().tolist() == [False, True, False]
    with pytest.raises(DataValidationError, match=r"column 'children'.*2\.9"):
        score.validate_input(rows(3).assign(children=[2.0, 2.9, 3.0]), gate)


def test_the_target_may_be_present_and_empty(gate):
    frame = mixed_frame(5, seed=3)
    assert len(score.validate_input(frame, gate).frame) == 5
    # A file of new rows with the target's column left blank (it had failed not_nullable).
    blank = frame.assign(churned=np.nan)
    assert score.validate_input(blank, gate).frame["churned"].isna().all()


def test_rows_and_columns_with_nothing_to_score_are_said():
    frame = pd.DataFrame(
        {
            "age": [np.nan] * 4,
            "city": ["paris", None, "nice", None],
            "plan": ["pro", None, "basic", None],
        }
    )
    assert score.missing(frame) == (
        "column(s) 'age': missing in all 4 rows; scored with the values training fills in for a "
        "missing one\n"
        "2 of 4 row(s) have every feature missing (row(s) 1, 3, counting from 0): their "
        "predictions come from filled-in values only"
    )
    assert score.missing(frame.iloc[[0]]) is None  # one request missing a field: nothing odd
    assert score.missing(frame.assign(age=1.0).iloc[[0, 2]]) is None


def test_checks_about_the_whole_dataset_do_not_apply_to_a_batch(gate):
    # One row, missing values (null fraction 100 %), and a duplicate: all fine to score.
    one = rows(1)
    one["income"] = np.nan
    one["city"] = None
    assert len(score.validate_input(one, gate).frame) == 1
    assert len(score.validate_input(pd.concat([one, one]), gate).frame) == 2


def test_a_category_never_seen_in_training_names_column_check_and_examples(gate):
    frame = rows(6)
    frame.loc[[1, 4], "plan"] = "enterprise"
    with pytest.raises(DataValidationError, match=r"^\[score\] dataset 'input' failed") as info:
        score.validate_input(frame, gate)
    message = str(info.value)
    assert "column 'plan', check seen_in_training: 2 row(s) (e.g. 'enterprise')" in message
    assert "stage run" not in message  # scoring has no run holding a failure table
    assert info.value.dataset == "input"
    assert set(info.value.failure_cases["failure_case"]) == {"enterprise"}


def test_missing_and_unexpected_columns_are_named(gate):
    frame = rows().drop(columns=["age"]).assign(notes="x")
    with pytest.raises(DataValidationError, match="missing column") as info:
        score.validate_input(frame, gate)
    message = str(info.value)
    assert "missing column(s): 'age'" in message
    assert "unexpected column(s): 'notes'" in message
    # The target and columns the model does not read (customer_id: data.ignore_columns).
    assert f"(optional: customer_id, {TARGET})" in message


def test_a_rule_of_the_training_config_still_applies(make_config, mixed_csv, train):
    cfg = make_config(*csv_overrides(mixed_csv), "+validation.ranges.age={min: 18, max: 80}")
    contract = infer_contract(train, TARGET, "classification")
    gate = score.scoring_gate(contract, cfg, {})
    frame = rows()
    frame.loc[0, "age"] = 130.0
    with pytest.raises(DataValidationError, match=r"column 'age', check in_range\(18, 80\)"):
        score.validate_input(frame, gate)


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["income", "plan"]]


def _pipeline(estimator: object):
    encode = ColumnTransformer(
        [
            ("n", SimpleImputer(), ["income"]),
            (
                "c",
                make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()),
                ["plan"],
            ),
        ]
    )
    return make_pipeline(encode, estimator)


def test_a_classifier_gives_predictions_probabilities_and_the_version():
    frame = mixed_frame(40)
    model = _pipeline(LogisticRegression()).fit(_features(frame), frame[TARGET])
    out = score.predictions(model, _features(frame), "7")
    assert list(out.columns) == ["prediction", "proba_0", "proba_1", "model_version"]
    assert (out["prediction"].to_numpy() == model.predict(_features(frame))).all()
    assert np.allclose(out[["proba_0", "proba_1"]].sum(axis=1), 1.0)
    assert set(out["model_version"]) == {"7"}


def test_a_regressor_gives_predictions_only():
    frame = mixed_frame(40)
    model = _pipeline(LinearRegression()).fit(_features(frame), frame["age"])
    out = score.predictions(model, _features(frame), "2")
    assert list(out.columns) == ["prediction", "model_version"]


def test_an_input_column_named_like_an_output_column_is_refused():
    predicted = pd.DataFrame({"prediction": [1], "model_version": ["1"]})
    with pytest.raises(DataError, match="'prediction'"):
        score.with_predictions(pd.DataFrame({"prediction": [0]}), predicted)


def test_output_is_written_whole_or_not_at_all(tmp_path):
    out = tmp_path / "pred.csv"
    out.write_text("old\n")
    score.write_csv_atomically(pd.DataFrame({"a": [1, 2]}), out)
    assert out.read_text() == "a\n1\n2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "pred.csv"]
    with pytest.raises(DataError, match=r"--output: cannot write"):
        score.write_csv_atomically(pd.DataFrame({"a": [1]}), tmp_path / "gone" / "pred.csv")
    assert not (tmp_path / "gone").exists()


def test_output_is_checked_before_scoring(tmp_path):
    with pytest.raises(DataError, match=r"--output: no directory"):
        score.check_writable(tmp_path / "gone" / "pred.csv")
    with pytest.raises(DataError, match=r"--output: .* is a directory"):
        score.check_writable(tmp_path)


def test_a_missing_input_file_names_input(tmp_path):
    with pytest.raises(DataError, match=r"^\[score\] --input: no file at .*nothing\.csv"):
        score.read_input(tmp_path / "nothing.csv", {})


def test_an_unreadable_input_gets_advice_score_can_follow(tmp_path):
    # ingest's advice (set data.read_options...) cannot be followed with score: it says how
    # the model's training read its data instead.
    latin = tmp_path / "latin.csv"
    latin.write_bytes("city,amount\nMontr\xe9al,1\n".encode("latin-1"))
    with pytest.raises(DataError) as raised:
        score.read_input(latin, {})
    message = str(raised.value)
    assert "--input: " in message
    assert "is not UTF-8 text (byte 0xe9 on line 2" in message
    assert "data.read_options: none): save the file in that form, or name its encoding " in message
    assert "set data.read_options" not in message
    # --encoding: read in the encoding given; one Python does not know is named as --encoding.
    assert score.read_input(latin, {}, "latin-1")["city"].tolist() == ["Montr\xe9al"]
    with pytest.raises(ConfigError, match=r"^\[score\] --encoding: unknown encoding: klingon"):
        score.read_input(latin, {}, "klingon")
    # An empty name (--encoding "") is no encoding; pandas would have read it as UTF-8.
    with pytest.raises(ConfigError, match=r"^\[score\] --encoding: an empty name is no encod"):
        score.read_input(latin, {"encoding": "latin-1"}, "")
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text("city;amount\nParis;1\n")
    with pytest.raises(DataError, match=r"looks ';'-separated; score reads it as the model's "):
        score.read_input(semicolons, {"encoding": "utf-8"})


def test_dates_that_do_not_read_as_dates_are_said():
    frame = pd.DataFrame(
        {
            "year": ["1970-01-01", "not a date", None, "soon", "not a date"],
            "signed": ["2024-03-01"] * 5,
        },
        index=[10, 11, 12, 13, 14],  # rows keep the input's index
    )
    assert score.unreadable_dates(frame, ("year", "signed")) == (
        "column 'year': 3 of 4 value(s) are not dates (e.g. 'not a date', 'soon'); scored as "
        "missing dates"
    )
    assert score.unreadable_dates(frame, ("signed",)) is None
    assert score.unreadable_dates(frame, ()) is None


def test_score_a_version_registered_in_process(tracking_store, tmp_path):
    data = tmp_path / "customers.csv"
    mixed_frame(200).to_csv(data, index=False)
    run_pipeline(tracking_store.config(*csv_overrides(data, *FAST)))
    good = tmp_path / "good.csv"
    frame = mixed_frame(30, seed=5).drop(columns=[TARGET])
    frame.to_csv(good, index=False)
    out = tmp_path / "pred.csv"

    result = score.score("models:/customers@champion", good, out, tracking_uri=tracking_store.uri)

    assert (result.model.name, result.model.version, result.rows) == ("customers", "1", 30)
    assert result.warning is None
    assert score.describe_score(result).startswith("scored 30 row(s) with customers v1")
    scored = pd.read_csv(out)
    assert list(scored.columns[: len(frame.columns)]) == list(frame.columns)
    assert len(scored) == 30
    assert set(scored["model_version"]) == {1}
    assert {"prediction", "proba_0", "proba_1"} <= set(scored.columns)

    blank = tmp_path / "blank.csv"
    frame.assign(income=np.nan).to_csv(blank, index=False)
    with_blank = score.score("models:/customers/1", blank, out, tracking_uri=tracking_store.uri)
    assert "column(s) 'income': missing in all 30 rows" in with_blank.warning

    unseen = tmp_path / "unseen.csv"
    frame.assign(city=["tokyo"] * 30).to_csv(unseen, index=False)
    out.unlink()
    with pytest.raises(DataValidationError, match="column 'city', check seen_in_training: 30") as e:
        score.score("models:/customers/1", unseen, out, tracking_uri=tracking_store.uri)
    assert (
        "'city': values the model never saw in training; if new values are expected there, "
        "retrain with +data.columns.city.role=text"
    ) in str(e.value)
    assert not out.exists()
    with pytest.raises(ConfigError, match="models:/customers@nope: no such model version"):
        score.score("models:/customers@nope", good, out, tracking_uri=tracking_store.uri)


def test_a_model_reading_a_column_the_contract_lacks_is_refused_in_one_line(cfg, train):
    """A project stage after validate added a column the model reads: score and serve take
    contract rows and run the model alone, so they could never give it that column."""
    contract = infer_contract(train, TARGET, "classification")
    derived = train.assign(income_per_year=train["income"] / train["age"])
    estimator = make_pipeline(SimpleImputer(), LogisticRegression()).fit(
        derived[["age", "income", "income_per_year"]], derived[TARGET]
    )
    model = score.ResolvedModel("models:/customers@champion", "customers", "3")
    training = score.Training(contract=contract, train=derived, cfg=cfg)
    with pytest.raises(
        PipelineError,
        match=r"^\[score\] models:/customers@champion \(v3\) reads column\(s\) "
        r"'income_per_year' that its data contract .*features.transformers",
    ):
        score.scorer_of(model, estimator, training)


def test_score_needs_a_version_with_lineage(tracking_store, tmp_path):
    client = tracking_store.client()
    client.create_registered_model("bare")
    run = client.create_run(client.create_experiment("bare"))
    client.create_model_version("bare", f"runs:/{run.info.run_id}/model", run.info.run_id)
    with pytest.raises(PipelineError, match="has no lineage"):
        score.score(
            "models:/bare/1",
            tmp_path / "x.csv",
            tmp_path / "y.csv",
            tracking_uri=tracking_store.uri,
        )
