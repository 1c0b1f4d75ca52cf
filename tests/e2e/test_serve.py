"""The champion in use, through the real CLI: ``mlflow-pipeline serve`` (a real
``mlflow models serve`` on loopback, answering like the model loaded in-process, refusing
malformed payloads with 4xx, stopping on SIGTERM) and ``mlflow-pipeline score``."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    REPO,
    TIMEOUT_S,
    VENV_BIN,
    Store,
    assert_clean_failure,
    assert_ok,
    tail,
)

pytestmark = pytest.mark.slow

CHAMPION_URI = f"models:/{CHAMPION_MODEL}@champion"
FEATURES = ["income", "age", "plan"]
READY_TIMEOUT_S = 120  # a busy 2-core machine: two processes import and load the model
STOP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def model_store(champion_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A copy of the session's champion store (v1 of ``customers`` holds ``champion``)."""
    root = tmp_path_factory.mktemp("serve")
    shutil.copy2(champion_template / "mlflow.db", root / "mlflow.db")
    shutil.copy2(champion_template / CHAMPION_DATA, root / CHAMPION_DATA)
    return Store(root)


@pytest.fixture(scope="module")
def champion(model_store: Store) -> Any:
    """The champion loaded in this process, as a user would load it."""
    return model_store.load_model(CHAMPION_MODEL, "1")


@pytest.fixture(scope="module")
def data(model_store: Store) -> pd.DataFrame:
    """The rows the champion was trained from (numeric and categorical gaps included)."""
    return pd.read_csv(model_store.root / CHAMPION_DATA)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` and a new server could bind it (as uvicorn does, with
    SO_REUSEADDR: the stopped server's closed connections may linger in TIME_WAIT)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Server:
    """``mlflow-pipeline serve`` running as a subprocess, with its output in files."""

    def __init__(self, store: Store, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.out = store.root / "serve.out"
        self.err = store.root / "serve.err"
        env = store.env()
        env.pop("PYTHONUNBUFFERED", None)  # its lines must come promptly without it
        # Without the venv on PATH: `serve` must find uvicorn by itself.
        env["PATH"] = os.pathsep.join(
            p for p in env["PATH"].split(os.pathsep) if Path(p) != VENV_BIN
        )
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [VENV_BIN / "mlflow-pipeline", "serve", CHAMPION_URI, "--port", str(port)],
                cwd=store.root,
                env=env,
                stdout=out,
                stderr=err,
            )
        self.descendants: list[psutil.Process] = []

    def logs(self) -> str:
        return f"--- stdout\n{tail(self.out.read_text())}\n--- stderr\n{tail(self.err.read_text())}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early\n{self.logs()}"
            if self.health() == 200:
                self.descendants = psutil.Process(self.process.pid).children(recursive=True)
                return
            time.sleep(0.5)
        pytest.fail(f"no /health within {READY_TIMEOUT_S} s\n{self.logs()}")

    def health(self) -> int | None:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return response.status
        except (urllib.error.URLError, OSError):
            return None

    def post(self, body: bytes | dict) -> tuple[int, Any]:
        """POST /invocations; (HTTP status, decoded JSON answer)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/invocations",
            data=data,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def kill(self) -> None:
        # Also the server process when it never became ready (its own session: it would
        # outlive a killed parent).
        try:
            current = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            current = []
        for process in [*self.descendants, *current, psutil.Process(self.process.pid)]:
            try:
                process.kill()
            except psutil.Error:
                pass
        self.process.wait(timeout=STOP_TIMEOUT_S)


@pytest.fixture(scope="module")
def server(model_store: Store) -> Iterator[Server]:
    running = Server(model_store, free_port())
    try:
        running.wait_ready()
        yield running
    finally:
        if running.process.poll() is None:
            running.kill()


def split_payload(frame: pd.DataFrame) -> dict:
    """``{"dataframe_split": ...}`` with missing values as JSON null."""
    return {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}


def assert_served_like_in_process(server: Server, champion: Any, frame: pd.DataFrame) -> None:
    status, answer = server.post(split_payload(frame))
    assert status == 200, answer
    expected = champion.predict(frame[FEATURES])
    assert answer["predictions"] == expected.tolist()


# ---- serve -----------------------------------------------------------------------------------


def test_serve_names_the_version_and_url(server):
    out = server.out.read_text()
    assert f"serving {CHAMPION_MODEL} v1 ({CHAMPION_URI} -> models:/{CHAMPION_MODEL}/1)" in out
    assert f"at {server.url}" in out
    deadline = time.monotonic() + 60
    while "ready:" not in server.out.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"ready: {server.url} serves {CHAMPION_MODEL} v1" in server.out.read_text()


def test_one_row_is_predicted_like_in_process(server, champion, data):
    assert_served_like_in_process(server, champion, data[FEATURES].iloc[[3]])


def test_a_batch_of_50_is_predicted_like_in_process(server, champion, data):
    assert_served_like_in_process(server, champion, data[FEATURES].iloc[50:100])


def test_missing_values_are_predicted_like_in_process(server, champion, data):
    frame = data[FEATURES].iloc[:4].copy()
    frame["income"] = frame["income"].astype(float)
    frame.loc[frame.index[0], "income"] = np.nan
    frame.loc[frame.index[1], "plan"] = None
    frame.loc[frame.index[2], ["income", "age", "plan"]] = [np.nan, np.nan, None]
    payload = split_payload(frame)
    assert [None, None, None] in payload["dataframe_split"]["data"]
    assert_served_like_in_process(server, champion, frame)


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        {"bogus": 1},
        {"dataframe_split": {"columns": ["income"], "data": [[1.0, 2.0, 3.0]]}},
    ],
    ids=["not_json", "no_input_field", "ragged_rows"],
)
def test_a_malformed_payload_gets_4xx_and_the_server_keeps_serving(server, champion, data, body):
    status, answer = server.post(body)
    assert 400 <= status < 500, (status, answer)
    assert server.health() == 200
    assert_served_like_in_process(server, champion, data[FEATURES].iloc[[0]])


# ---- serve and score hold rows to the same contract -------------------------------------------

# "column 'plan', check seen_in_training": what both name for a refused row.
REASON = re.compile(r"column '([^']+)', check ([\w()'., -]+?)(?::| \(|;|$)")


def shared_rows(data: pd.DataFrame) -> pd.DataFrame:
    """One test file for both: 24 rows of the training data (label included: it is optional),
    ints and gaps, two plans the champion never saw and an income that is not a number."""
    rows = data.iloc[100:124].reset_index(drop=True).copy()
    rows["age"] = rows["age"].astype("Int64")  # written as 41, not 41.0; gaps stay gaps
    rows["income"] = rows["income"].round(2).astype(object)
    rows.loc[[3, 17], "plan"] = "enterprise"
    rows.loc[9, "income"] = "n/a (refused)"
    return rows


def reasons(message: str) -> set[tuple[str, str]]:
    return {(column, check.strip()) for column, check in REASON.findall(message)}


def score_cli(store: Store, source: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            VENV_BIN / "mlflow-pipeline",
            "score",
            CHAMPION_URI,
            "--input",
            source,
            "--output",
            output,
        ],
        cwd=store.root,
        env=store.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_one_line_refusal(status: int, answer: Any, *needles: str) -> str:
    assert status in (400, 422), (status, answer)
    assert set(answer) == {"error_code", "message"}, answer  # no stack_trace
    message = answer["message"]
    assert "\n" not in message, message
    assert "Traceback" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def test_serve_and_score_agree_on_every_row_of_one_file(server, model_store, data):
    rows = shared_rows(data)
    source = model_store.root / "shared.csv"
    rows.to_csv(source, index=False)
    from_file = pd.read_csv(source)  # what score reads: each row sent as it is in the file

    served = [server.post(split_payload(from_file.iloc[[i]])) for i in range(len(from_file))]
    refused = [i for i, (status, _) in enumerate(served) if status != 200]
    assert refused == [3, 9, 17], served
    accepted = [i for i in range(len(from_file)) if i not in refused]

    # score: the accepted rows as one file, each refused row alone, and the whole file.
    jobs = {"accepted": from_file.iloc[accepted], "all": from_file}
    jobs |= {f"row{i}": from_file.iloc[[i]] for i in refused}
    started = {}
    for name, frame in jobs.items():
        frame.to_csv(model_store.root / f"shared-{name}.csv", index=False)
        output = model_store.root / f"shared-{name}-pred.csv"
        started[name] = (
            output,
            score_cli(model_store, model_store.root / f"shared-{name}.csv", output),
        )
    results = {}
    for name, (output, process) in started.items():
        out, err = process.communicate(timeout=TIMEOUT_S)
        results[name] = (output, subprocess.CompletedProcess([], process.returncode, out, err))

    output, ok = results["accepted"]
    assert_ok(ok)
    scored = pd.read_csv(output)["prediction"].tolist()
    assert [served[i][1]["predictions"][0] for i in accepted] == scored
    for i in refused:
        message = assert_one_line_refusal(*served[i], "[serve] dataset 'request'")
        _, alone = results[f"row{i}"]
        assert_clean_failure(alone, "[score] dataset 'input' failed validation")
        assert reasons(message) == reasons(alone.stderr) != set(), (message, alone.stderr)
    assert reasons(served[3][1]["message"]) == {("plan", "seen_in_training")}

    # The whole file, served as one batch, is refused for the same reasons as scored.
    batch = assert_one_line_refusal(*server.post(split_payload(from_file)))
    _, whole = results["all"]
    assert_clean_failure(whole, "column 'plan', check seen_in_training: 2 row(s)")
    assert reasons(batch) == reasons(whole.stderr)
    assert "column 'plan', check seen_in_training: 2 row(s) (e.g. 'enterprise')" in batch


def test_a_missing_column_is_refused_with_a_one_line_reason(server, data):
    status, answer = server.post(split_payload(data[["income", "plan"]].iloc[:3]))
    assert_one_line_refusal(status, answer, "missing column(s): 'age'", "column_in_dataframe")
    status, answer = server.post({"dataframe_records": [{"income": 50.0, "plan": "basic"}]})
    assert_one_line_refusal(status, answer, "'age'")


def test_int64_input_and_ints_with_gaps_are_accepted(server, champion, data):
    frame = data[FEATURES].iloc[:6].copy()
    frame["income"] = frame["income"].fillna(40).round().astype("int64")
    frame["age"] = frame["age"].fillna(30).astype("int64")
    payload = split_payload(frame)
    assert all(isinstance(v, int) for row in payload["dataframe_split"]["data"] for v in row[:2])
    assert_served_like_in_process(server, champion, frame)

    gaps = frame.copy().astype({"age": "Int64", "income": "Int64"})
    gaps.loc[gaps.index[[1, 4]], "age"] = pd.NA
    gaps.loc[gaps.index[2], "income"] = pd.NA
    payload = split_payload(gaps)
    assert payload["dataframe_split"]["data"][1][1] is None
    status, answer = server.post(payload)
    assert status == 200, answer
    expected = champion.predict(gaps.astype({"age": float, "income": float})[FEATURES])
    assert answer["predictions"] == expected.tolist()
    # The same as records, ints and nulls as JSON has them.
    status, answer = server.post({"dataframe_records": json.loads(gaps.to_json(orient="records"))})
    assert status == 200, answer
    assert answer["predictions"] == expected.tolist()


def test_sigterm_stops_the_server_and_frees_the_port(server):
    """Last in the module: it stops the module's server."""
    assert server.descendants, "mlflow models serve started no server process"
    code = server.stop()
    assert code == 128 + signal.SIGTERM, server.logs()
    assert "Traceback" not in server.err.read_text()
    alive = [p.pid for p in server.descendants if p.is_running() and p.status() != "zombie"]
    assert not alive, f"left running: {alive}"
    assert port_is_free(server.port)


def test_serve_an_unknown_alias_fails_cleanly(scored):
    result = scored["serve_unknown_alias"].result
    assert_clean_failure(result, f"models:/{CHAMPION_MODEL}@nope", "no such model version")
    assert result.returncode == 1


# ---- score -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreCase:
    model_uri: str
    rows: Callable[[pd.DataFrame], pd.DataFrame]
    # The file's encoding (training read UTF-8), and whether score is told it (--encoding).
    encoding: str = "utf-8"
    told: bool = False


SCORE_CASES = {
    # The target is optional at scoring time.
    "good": ScoreCase(CHAMPION_URI, lambda d: d.drop(columns=["label"]).iloc[:40]),
    "unseen": ScoreCase(
        CHAMPION_URI, lambda d: d.iloc[:20].assign(plan=lambda f: _unseen(f["plan"]))
    ),
    "no_age": ScoreCase(CHAMPION_URI, lambda d: d.drop(columns=["label", "age"]).iloc[:10]),
    "unknown_alias": ScoreCase(f"models:/{CHAMPION_MODEL}@nope", lambda d: d.iloc[:5]),
    # A spreadsheet's "Unicode text" export: UTF-16.
    "utf16": ScoreCase(CHAMPION_URI, lambda d: d.iloc[:8], "utf-16", told=True),
    "utf16_untold": ScoreCase(CHAMPION_URI, lambda d: d.iloc[:8], "utf-16"),
}


def _unseen(plan: pd.Series) -> pd.Series:
    """Three rows of a plan the champion never saw in training."""
    plan = plan.copy()
    plan.iloc[[2, 5, 11]] = "enterprise"
    return plan


@dataclass
class Scored:
    input: pd.DataFrame | None
    output: Path | None
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def scored(model_store: Store, data: pd.DataFrame) -> dict[str, Scored]:
    """Every ``mlflow-pipeline score`` case and ``serve`` of an unknown alias, run at the same
    time (each is its own process with its own files; most of their time is imports)."""
    started = {}
    for name, case in SCORE_CASES.items():
        rows = case.rows(data)
        source = model_store.root / f"{name}.csv"
        rows.to_csv(source, index=False, encoding=case.encoding)
        output = model_store.root / f"{name}-pred.csv"
        args = [
            str(VENV_BIN / "mlflow-pipeline"),
            "score",
            case.model_uri,
            "--input",
            str(source),
            "--output",
            str(output),
            *(["--encoding", case.encoding] if case.told else []),
        ]
        process = subprocess.Popen(
            args,
            cwd=model_store.root,
            env=model_store.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started[name] = (rows, output, args, process)
    serve_args = [str(VENV_BIN / "mlflow-pipeline"), "serve", f"models:/{CHAMPION_MODEL}@nope"]
    started["serve_unknown_alias"] = (
        None,
        None,
        serve_args,
        subprocess.Popen(
            serve_args,
            cwd=model_store.root,
            env=model_store.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    )
    done = {}
    for name, (rows, output, args, process) in started.items():
        out, err = process.communicate(timeout=TIMEOUT_S)
        result = subprocess.CompletedProcess(args, process.returncode, out, err)
        done[name] = Scored(input=rows, output=output, result=result)
    return done


def test_score_a_good_file(scored, champion):
    case = scored["good"]
    assert_ok(case.result)
    assert f"scored 40 row(s) with {CHAMPION_MODEL} v1 ({CHAMPION_URI})" in case.result.stdout
    rows = case.input
    output = pd.read_csv(case.output)
    assert len(output) == len(rows)
    pd.testing.assert_frame_equal(output[FEATURES], rows[FEATURES], check_dtype=False)
    assert output["prediction"].tolist() == champion.predict(rows[FEATURES]).tolist()
    proba = champion.predict_proba(rows[FEATURES])
    np.testing.assert_allclose(output[["proba_0", "proba_1"]].to_numpy(), proba, rtol=1e-12)
    assert set(output["model_version"]) == {1}


def test_score_an_unseen_category_fails_and_writes_nothing(scored, model_store):
    case = scored["unseen"]
    assert_clean_failure(
        case.result,
        "mlflow-pipeline: error: [score] dataset 'input' failed validation",
        "column 'plan', check seen_in_training: 3 row(s) (e.g. 'enterprise')",
    )
    assert case.result.returncode == 1
    assert not case.output.exists()
    assert not list(model_store.root.glob(f".{case.output.name}*")), "a temporary file was left"


def test_score_a_file_missing_a_column_fails_naming_it(scored):
    case = scored["no_age"]
    assert_clean_failure(case.result, "[score] dataset 'input'", "missing column(s): 'age'")
    assert case.result.returncode == 1
    assert not case.output.exists()


def test_a_file_in_another_encoding_is_scored_when_its_encoding_is_named(scored, champion):
    untold = scored["utf16_untold"]
    assert_clean_failure(
        untold.result,
        "[score] --input: ",
        "is not UTF-8 text (byte 0xff on line 1",
        "or name its encoding (--encoding utf-16, as its first bytes, a UTF-16 byte order mark",
    )
    assert not untold.output.exists()
    told = scored["utf16"]
    assert_ok(told.result)
    output = pd.read_csv(told.output)
    assert output["prediction"].tolist() == champion.predict(told.input[FEATURES]).tolist()


def test_score_with_an_unknown_alias_fails_cleanly(scored):
    case = scored["unknown_alias"]
    assert_clean_failure(case.result, f"models:/{CHAMPION_MODEL}@nope: no such model version")
    assert case.result.returncode == 1
    assert not case.output.exists()


def test_score_entry_point_of_mlflow_run_records_the_scoring(model_store: Store, data, champion):
    """`mlflow run . -e score`: the same scoring, recorded on the run; a bad file FAILS the run
    with the column named and writes nothing."""
    good, bad = model_store.root / "ep-good.csv", model_store.root / "ep-bad.csv"
    data.drop(columns=["label"]).iloc[:25].to_csv(good, index=False)
    data.iloc[:20].assign(plan=lambda f: _unseen(f["plan"])).to_csv(bad, index=False)
    outputs = {}
    for name, source in (("good", good), ("bad", bad)):
        outputs[name] = model_store.root / f"ep-{name}-pred.csv"
        result = model_store.run(
            VENV_BIN / "mlflow", "run", REPO, "--env-manager", "local", "-e", "score",
            "--experiment-name", "scoring",
            "-P", f"model_uri={CHAMPION_URI}", "-P", f"input={source}",
            "-P", f"output={outputs[name]}",
        )  # fmt: skip
        if name == "good":
            assert_ok(result)
        else:
            assert result.returncode != 0
            assert "column 'plan', check seen_in_training" in result.stderr
    scored = pd.read_csv(outputs["good"])
    assert scored["prediction"].tolist() == champion.predict(scored[FEATURES]).tolist()
    assert not outputs["bad"].exists()
    experiment = model_store.client.get_experiment_by_name("scoring")
    runs = model_store.client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    ok, failed = runs
    assert ok.data.params["model_version"] == "1"
    assert ok.data.tags["score.model"] == f"models:/{CHAMPION_MODEL}/1"
    assert ok.data.tags["score.output"] == str(outputs["good"])
    assert ok.data.metrics["rows_scored"] == 25
    assert "seen_in_training" in failed.data.tags["pipeline.error"]
