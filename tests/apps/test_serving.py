"""serving: the scoring gate (training contract, target optional, seen_in_training), the
prediction columns, the all-or-nothing output file, the serve command and its environment,
and ``score`` end to end on a version registered in-process."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from mlflow_pipeline.apps import serving
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
    columns = serving.categorical_features(contract, train, TARGET, ["customer_id"])
    return serving.scoring_gate(contract, cfg, serving.seen_categories(train, columns))


def rows(n: int = 5) -> pd.DataFrame:
    return mixed_frame(n, seed=3).drop(columns=[TARGET])


def test_categorical_features_are_the_string_features(train):
    contract = infer_contract(train, TARGET, "classification")
    found = serving.categorical_features(contract, train, TARGET, ["customer_id"])
    assert found == ["city", "plan"]
    seen = serving.seen_categories(train, found)
    assert seen == {"city": {"paris", "lyon", "nice"}, "plan": {"basic", "pro"}}


def test_rows_without_the_target_pass_and_are_coerced_as_in_training(gate):
    frame = rows()
    frame["age"] = frame["age"].astype(int).astype(str)  # "42": coerced to float, as in training
    result = serving.validate_input(frame, gate)
    assert result.frame["age"].dtype == "float64"
    assert result.warning is None


def test_the_target_may_be_present(gate):
    frame = mixed_frame(5, seed=3)
    assert len(serving.validate_input(frame, gate).frame) == 5


def test_checks_about_the_whole_dataset_do_not_apply_to_a_batch(gate):
    # One row, missing values (null fraction 100 %), and a duplicate: all fine to score.
    one = rows(1)
    one["income"] = np.nan
    one["city"] = None
    assert len(serving.validate_input(one, gate).frame) == 1
    assert len(serving.validate_input(pd.concat([one, one]), gate).frame) == 2


def test_a_category_never_seen_in_training_names_column_check_and_examples(gate):
    frame = rows(6)
    frame.loc[[1, 4], "plan"] = "enterprise"
    with pytest.raises(DataValidationError, match=r"^\[score\] dataset 'input' failed") as info:
        serving.validate_input(frame, gate)
    message = str(info.value)
    assert "column 'plan', check seen_in_training: 2 row(s) (e.g. 'enterprise')" in message
    assert "stage run" not in message  # scoring has no run holding a failure table
    assert info.value.dataset == "input"
    assert set(info.value.failure_cases["failure_case"]) == {"enterprise"}


def test_missing_and_unexpected_columns_are_named(gate):
    frame = rows().drop(columns=["age"]).assign(notes="x")
    with pytest.raises(DataValidationError, match="missing column") as info:
        serving.validate_input(frame, gate)
    message = str(info.value)
    assert "missing column(s): 'age'" in message
    assert "unexpected column(s): 'notes'" in message
    assert f"(optional: {TARGET})" in message


def test_a_rule_of_the_training_config_still_applies(make_config, mixed_csv, train):
    cfg = make_config(*csv_overrides(mixed_csv), "+validation.ranges.age={min: 18, max: 80}")
    contract = infer_contract(train, TARGET, "classification")
    gate = serving.scoring_gate(contract, cfg, {})
    frame = rows()
    frame.loc[0, "age"] = 130.0
    with pytest.raises(DataValidationError, match=r"column 'age', check in_range\(18, 80\)"):
        serving.validate_input(frame, gate)


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
    out = serving.predictions(model, _features(frame), "7")
    assert list(out.columns) == ["prediction", "proba_0", "proba_1", "model_version"]
    assert (out["prediction"].to_numpy() == model.predict(_features(frame))).all()
    assert np.allclose(out[["proba_0", "proba_1"]].sum(axis=1), 1.0)
    assert set(out["model_version"]) == {"7"}


def test_a_regressor_gives_predictions_only():
    frame = mixed_frame(40)
    model = _pipeline(LinearRegression()).fit(_features(frame), frame["age"])
    out = serving.predictions(model, _features(frame), "2")
    assert list(out.columns) == ["prediction", "model_version"]


def test_an_input_column_named_like_an_output_column_is_refused():
    predicted = pd.DataFrame({"prediction": [1], "model_version": ["1"]})
    with pytest.raises(DataError, match="'prediction'"):
        serving.with_predictions(pd.DataFrame({"prediction": [0]}), predicted)


def test_output_is_written_whole_or_not_at_all(tmp_path):
    out = tmp_path / "pred.csv"
    out.write_text("old\n")
    serving.write_csv_atomically(pd.DataFrame({"a": [1, 2]}), out)
    assert out.read_text() == "a\n1\n2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "pred.csv"]
    with pytest.raises(DataError, match=r"--output: cannot write"):
        serving.write_csv_atomically(pd.DataFrame({"a": [1]}), tmp_path / "gone" / "pred.csv")
    assert not (tmp_path / "gone").exists()


def test_output_is_checked_before_scoring(tmp_path):
    with pytest.raises(DataError, match=r"--output: no directory"):
        serving.check_writable(tmp_path / "gone" / "pred.csv")
    with pytest.raises(DataError, match=r"--output: .* is a directory"):
        serving.check_writable(tmp_path)


def test_a_missing_input_file_names_input(tmp_path):
    with pytest.raises(DataError, match=r"^\[score\] --input: no file at .*nothing\.csv"):
        serving.read_input(tmp_path / "nothing.csv", {})


def test_serve_command_is_mlflow_models_serve_with_the_local_env_manager():
    command = serving.serve_command("models:/m/3", host="127.0.0.1", port=5123)
    assert command == [
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/m/3",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "-p",
        "5123",
    ]


def test_serve_env_puts_the_venv_first_on_path_and_names_the_store():
    env = serving.serve_env(
        {"PATH": "/usr/bin", "HOME": "/root"}, tracking_uri="sqlite:///x.db", bin_path=Path("/v")
    )
    assert env["PATH"] == f"/v{os.pathsep}/usr/bin"
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_REGISTRY_URI"] == "sqlite:///x.db"
    assert env["HOME"] == "/root"
    assert serving.bin_dir().joinpath("python").exists()


def test_exit_codes_and_urls():
    assert serving.exit_code(0) == 0
    assert serving.exit_code(3) == 3
    assert serving.exit_code(-15) == 143
    assert serving.url_of("127.0.0.1", 5001) == "http://127.0.0.1:5001"
    assert serving.url_of("::1", 5001) == "http://[::1]:5001"


def test_a_taken_port_is_refused_before_starting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"--port {port} on 127.0.0.1: already in use"):
            serving.check_port_free("127.0.0.1", port)
        assert not serving.is_healthy(f"http://127.0.0.1:{port}", timeout_s=0.2)
    with pytest.raises(ConfigError, match="not a TCP port"):
        serving.check_port_free("127.0.0.1", 70000)


def test_score_a_version_registered_in_process(tracking_store, tmp_path):
    data = tmp_path / "customers.csv"
    mixed_frame(200).to_csv(data, index=False)
    run_pipeline(tracking_store.config(*csv_overrides(data, *FAST)))
    good = tmp_path / "good.csv"
    frame = mixed_frame(30, seed=5).drop(columns=[TARGET])
    frame.to_csv(good, index=False)
    out = tmp_path / "pred.csv"

    result = serving.score("models:/customers@champion", good, out, tracking_uri=tracking_store.uri)

    assert (result.model.name, result.model.version, result.rows) == ("customers", "1", 30)
    assert serving.describe_score(result).startswith("scored 30 row(s) with customers v1")
    scored = pd.read_csv(out)
    assert list(scored.columns[: len(frame.columns)]) == list(frame.columns)
    assert len(scored) == 30
    assert set(scored["model_version"]) == {1}
    assert {"prediction", "proba_0", "proba_1"} <= set(scored.columns)

    unseen = tmp_path / "unseen.csv"
    frame.assign(city=["tokyo"] * 30).to_csv(unseen, index=False)
    out.unlink()
    with pytest.raises(DataValidationError, match="column 'city', check seen_in_training: 30"):
        serving.score("models:/customers/1", unseen, out, tracking_uri=tracking_store.uri)
    assert not out.exists()
    with pytest.raises(ConfigError, match="models:/customers@nope: no such model version"):
        serving.score("models:/customers@nope", good, out, tracking_uri=tracking_store.uri)


def test_score_needs_a_version_with_lineage(tracking_store, tmp_path):
    client = tracking_store.client()
    client.create_registered_model("bare")
    run = client.create_run(client.create_experiment("bare"))
    client.create_model_version("bare", f"runs:/{run.info.run_id}/model", run.info.run_id)
    with pytest.raises(PipelineError, match="has no lineage"):
        serving.score(
            "models:/bare/1",
            tmp_path / "x.csv",
            tmp_path / "y.csv",
            tracking_uri=tracking_store.uri,
        )


# A stand-in for `mlflow models serve`: a process that starts the server (a grandchild that
# records the signal it gets) and waits for it.
SERVER_SCRIPT = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    marker.write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
marker.with_suffix(".ready").touch()
while True:
    time.sleep(0.05)
"""
LAUNCHER_SCRIPT = """
import subprocess, sys
sys.exit(subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]).wait())
"""


def test_a_signal_reaches_the_server_and_nothing_is_left_running(tmp_path):
    marker = tmp_path / "server.signal"
    server = serving._Server()
    child = server.start(
        [sys.executable, "-c", LAUNCHER_SCRIPT, SERVER_SCRIPT, str(marker)], dict(os.environ)
    )
    deadline = time.monotonic() + 30
    while not marker.with_suffix(".ready").exists():
        assert time.monotonic() < deadline, "the stand-in server did not start"
        assert child.poll() is None
        time.sleep(0.05)

    server.forward(signal.SIGINT, None)
    server.stop_all()

    assert marker.read_text() == str(int(signal.SIGINT))  # the server itself got the Ctrl-C
    assert child.returncode is not None
    assert serving.exit_code(-server.signal) == 130
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)  # no process of its group is left
