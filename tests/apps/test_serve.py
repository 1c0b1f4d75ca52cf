"""serve: the serve command and its environment, ports, exit codes, how a signal reaches the
server and leaves nothing running; and the server itself over real HTTP, holding each request
to the training contract as ``score`` does."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline.apps import score, serve
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import ConfigError, DataError, DataValidationError
from tests.helpers import csv_overrides, mixed_frame


def test_serve_command_runs_this_module_with_the_version_and_its_checked_copy():
    command = serve.serve_command(
        "models:/m/3",
        "/tmp/copy",
        tracking_uri="sqlite:///x.db",
        host="127.0.0.1",
        port=5123,
        python="/v/python",
    )
    assert command == [
        "/v/python",
        "-m",
        "mlflow_pipeline.apps.serve",
        "--model-uri",
        "models:/m/3",
        "--local",
        "/tmp/copy",
        "--tracking-uri",
        "sqlite:///x.db",
        "--host",
        "127.0.0.1",
        "--port",
        "5123",
    ]
    unsafe = serve.serve_command(
        "models:/m/3", "/c", tracking_uri="u", host="h", port=1, allow_unsafe=True
    )
    assert unsafe[-1] == "--allow-unsafe"
    assert unsafe[0] == sys.executable


def test_a_refusal_is_one_line_of_json_without_a_stack_trace():
    message = (
        "[serve] dataset 'request' failed validation: 1 check(s), 2 failing value(s)\n"
        "  - column 'plan', check seen_in_training: 2 row(s) (e.g. 'enterprise')\n"
    )
    status, answer = serve.refusal(message)
    assert status == 400
    assert answer == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "[serve] dataset 'request' failed validation: 1 check(s), 2 failing value(s); "
        "column 'plan', check seen_in_training: 2 row(s) (e.g. 'enterprise')",
    }


def test_a_request_is_a_table_of_rows():
    frame = pd.DataFrame({"a": [1]})
    assert serve.request_frame(frame) is frame
    columns = serve.request_frame({"a": np.array([1, 2]), "b": np.array(["x", None])})
    assert list(columns.columns) == ["a", "b"]
    with pytest.raises(DataError, match=r"^\[serve\] the request holds no table of rows"):
        serve.request_frame(np.array([1, 2]))
    with pytest.raises(DataError, match="no table of rows"):
        serve.request_frame({"a": [1, 2], "b": [1]})
    # "inputs" as one record per row: MLflow hands over a list of dicts.
    records = serve.request_frame([{"a": 1, "b": "x"}, {"a": 2, "b": None}])
    assert records["a"].tolist() == [1, 2]
    assert records["b"].iloc[0] == "x"
    assert records["b"].isna().tolist() == [False, True]
    # No row at all: said so, not a traceback from the model.
    for empty in ([], pd.DataFrame(), pd.DataFrame({"a": []})):
        with pytest.raises(DataError, match=r"^\[serve\] the request holds no row to score"):
            serve.request_frame(empty)


def test_serve_env_puts_the_venv_first_on_path_and_names_the_store():
    env = serve.serve_env(
        {"PATH": "/usr/bin", "HOME": "/root"}, tracking_uri="sqlite:///x.db", bin_path=Path("/v")
    )
    assert env["PATH"] == f"/v{os.pathsep}/usr/bin"
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_REGISTRY_URI"] == "sqlite:///x.db"
    assert env["HOME"] == "/root"
    assert serve.bin_dir().joinpath("python").exists()


def test_exit_codes_and_urls():
    assert serve.exit_code(0) == 0
    assert serve.exit_code(3) == 3
    assert serve.exit_code(-15) == 143
    assert serve.url_of("127.0.0.1", 5001) == "http://127.0.0.1:5001"
    assert serve.url_of("::1", 5001) == "http://[::1]:5001"


def test_a_taken_port_is_refused_before_starting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"--port {port} on 127.0.0.1: already in use"):
            serve.check_port_free("127.0.0.1", port)
        assert not serve.is_healthy(f"http://127.0.0.1:{port}", timeout_s=0.2)
    with pytest.raises(ConfigError, match="not a TCP port"):
        serve.check_port_free("127.0.0.1", 70000)


# A stand-in for `mlflow models serve`: a process that starts the server (a grandchild that
# records the signal it gets) and waits for it.
SERVER_SCRIPT = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
def stop(signum, frame):  # every signal it gets, one per line
    with marker.open("a") as signals:
        print(signum, file=signals)
    time.sleep(0.5)  # a server finishing its requests in flight
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
marker.with_suffix(".ready").touch()
while True:
    time.sleep(0.05)
"""
LAUNCHER_SCRIPT = """
import signal, subprocess, sys
signal.signal(signal.SIGTERM, lambda *_: None)  # it waits for its server to stop
sys.exit(subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]).wait())
"""


def test_a_signal_reaches_the_server_and_nothing_is_left_running(tmp_path):
    marker = tmp_path / "server.signal"
    server = serve._Server()
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

    # The server itself got the Ctrl-C, and nothing more while it stopped (a SIGTERM on top had
    # stopped it as a second signal, CI once).
    assert marker.read_text() == f"{int(signal.SIGINT)}\n"
    assert child.returncode is not None
    assert serve.exit_code(-server.signal) == 130
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)  # no process of its group is left


# ---- the server on a version registered in-process, over real HTTP ---------------------------

TARGET = "churned"
FAST = ["model=logistic_regression", "model.max_iter=200", "registry.model_name=customers"]


@pytest.fixture(scope="module")
def registered(open_store, tmp_path_factory):
    """A version registered by a real pipeline run on ``mixed_frame`` data, and its store."""
    root = tmp_path_factory.mktemp("serve-store")
    with open_store(root) as store:
        data = root / "customers.csv"
        mixed_frame(200).to_csv(data, index=False)
        run_pipeline(store.config(*csv_overrides(data, *FAST)))
        yield store


@pytest.fixture(scope="module")
def http(registered, tmp_path_factory):
    """``serving_app`` of v1 run by uvicorn (in a thread of this process) on a free port; a
    function that POSTs a payload and returns (status, JSON answer)."""
    import uvicorn

    from mlflow_pipeline.store.artifacts import trusted_model_copy

    local = trusted_model_copy("models:/customers/1", tmp_path_factory.mktemp("copy"))
    scorer = serve.load_scorer("models:/customers/1", local, tracking_uri=registered.uri)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(serve.serving_app(scorer), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not serve.is_healthy(url, timeout_s=0.5):
        assert time.monotonic() < deadline, "the server did not answer /health"
        time.sleep(0.1)

    def post(payload: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    yield post
    server.should_exit = True
    thread.join(timeout=30)


def split_payload(frame: pd.DataFrame) -> dict:
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def scored_alone(row: pd.DataFrame, path: Path, uri: str) -> tuple[list | None, str]:
    """``score`` on a file of one row: (its predictions, "") or (None, why it was refused)."""
    row.to_csv(path, index=False)
    out = path.with_suffix(".pred.csv")
    try:
        score.score("models:/customers/1", path, out, tracking_uri=uri)
    except DataValidationError as exc:
        return None, str(exc)
    return pd.read_csv(out)["prediction"].tolist(), ""


def test_serve_and_score_agree_row_by_row(http, registered, tmp_path):
    rows = mixed_frame(12, seed=5).drop(columns=[TARGET])
    rows.loc[[2, 7], "city"] = "tokyo"  # never seen in training
    rows["age"] = rows["age"].astype("int64")
    source = tmp_path / "rows.csv"
    rows.to_csv(source, index=False)
    from_file = pd.read_csv(source)
    unseen = "column 'city', check seen_in_training: 1 row(s) (e.g. 'tokyo')"

    refused = []
    for i in range(len(from_file)):
        status, answer = http(split_payload(from_file.iloc[[i]]))
        predicted, why = scored_alone(from_file.iloc[[i]], tmp_path / f"row{i}.csv", registered.uri)
        if predicted is None:
            refused.append(i)
            assert status == 400, (i, answer)
            assert unseen in why
            assert unseen in answer["message"]
            assert "\n" not in answer["message"]
        else:
            assert (status, answer) == (200, {"predictions": predicted}), i
    assert refused == [2, 7]


def test_a_missing_column_gets_400_naming_it(http):
    status, answer = http(split_payload(mixed_frame(3).drop(columns=[TARGET, "income"])))
    assert status == 400
    assert set(answer) == {"error_code", "message"}
    assert "missing column(s): 'income'" in answer["message"]
    assert "\n" not in answer["message"]


def test_ints_with_gaps_and_records_are_accepted(http):
    frame = mixed_frame(6, seed=2).drop(columns=[TARGET])
    frame["age"] = frame["age"].astype("Int64")
    frame.loc[[1, 3], "age"] = pd.NA
    status, answer = http({"dataframe_records": json.loads(frame.to_json(orient="records"))})
    assert status == 200, answer
    assert len(answer["predictions"]) == 6
