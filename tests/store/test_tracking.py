"""Tracking URI resolution, experiment set-up and code version tags."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline.config import PROJECT_ROOT, load_config
from mlflow_pipeline.errors import StoreError
from mlflow_pipeline.store import tracking
from mlflow_pipeline.tags import MLflow, Runs


def test_environment_uri_wins_over_the_embedded_store(tracking_store):
    resolved = tracking.resolve_tracking(tracking_store.config())
    assert resolved.uri == tracking_store.uri
    assert resolved.artifact_root == str(tracking_store.root / "mlruns")


def test_config_uri_wins_over_the_environment(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    resolved = tracking.resolve_tracking(load_config([f"tracking.uri={uri}"]))
    assert resolved.uri == uri


def test_embedded_store_under_root_without_any_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    resolved = tracking.resolve_tracking(load_config([f"tracking.root={tmp_path}"]))
    assert resolved.uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolved.artifact_root == str(tmp_path / "mlruns")


def test_default_root_is_the_project_root(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    resolved = tracking.resolve_tracking(load_config())
    assert resolved.uri == f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def test_remote_uri_has_no_local_artifact_root():
    resolved = tracking.resolve_tracking(load_config(["tracking.uri=http://127.0.0.1:5000"]))
    assert resolved == tracking.Tracking(uri="http://127.0.0.1:5000", artifact_root=None)


def test_relative_sqlite_uri_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.absolute_sqlite_uri("sqlite:///rel.db") == f"sqlite:///{tmp_path / 'rel.db'}"
    assert tracking.absolute_sqlite_uri("sqlite:////abs/x.db") == "sqlite:////abs/x.db"
    assert tracking.absolute_sqlite_uri("http://h:5000") == "http://h:5000"


def test_activate_points_process_and_children_at_the_store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'activated.db'}"
    tracking.activate(tracking.Tracking(uri=uri, artifact_root=None))
    assert mlflow.get_tracking_uri() == uri
    assert mlflow.get_registry_uri() == uri
    assert os.environ["MLFLOW_TRACKING_URI"] == uri


def test_ensure_experiment_creates_once_with_artifacts_under_root(tracking_store):
    client = MlflowClient(tracking_store.uri)
    store = tracking.Tracking(
        uri=tracking_store.uri, artifact_root=str(tracking_store.root / "mlruns")
    )
    first = tracking.ensure_experiment(client, "my data/v2", store)
    assert tracking.ensure_experiment(client, "my data/v2", store) == first
    location = client.get_experiment(first).artifact_location
    assert location == (tracking_store.root / "mlruns" / "my_data_v2").as_uri()


def test_code_version_of_this_checkout():
    version = tracking.code_version()
    if not (PROJECT_ROOT / ".git").exists():
        assert version == {}
        return
    assert len(version[Runs.GIT_COMMIT]) == 40
    assert version[MLflow.GIT_COMMIT] == version[Runs.GIT_COMMIT]
    assert version[Runs.GIT_DIRTY] in ("true", "false")


LEFT_ACTIVE = """
import sys
import mlflow
from mlflow_pipeline import interrupt
from mlflow_pipeline.store import tracking
tracking.activate(tracking.Tracking(uri=sys.argv[1], artifact_root=None))
pipeline = mlflow.start_run(run_name="pipeline")
mlflow.start_run(run_name="stage", nested=True)
interrupt.remember()  # as the command does when Ctrl-C reaches it
"""


def test_runs_a_ctrl_c_left_active_end_killed_at_exit(tracking_store):
    # A second Ctrl-C in the runner's clean-up had left the pipeline run active, and MLflow's
    # exit handler ended it FINISHED (it ends the top run only, FINISHED whatever happened).
    subprocess.run([sys.executable, "-c", LEFT_ACTIVE, tracking_store.uri], check=True, timeout=120)
    runs = MlflowClient(tracking_store.uri).search_runs(["0"])
    assert {r.info.run_name: r.info.status for r in runs} == {
        "pipeline": "KILLED",
        "stage": "KILLED",
    }


# ------------------------------------------------------------------ abandoned runs, retries
ORPHAN = """
import os, sys
import pandas as pd
from mlflow.tracking import MlflowClient
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.store.tracking import owner_tags
client = MlflowClient(sys.argv[1])
run = client.create_run(sys.argv[2], tags=owner_tags())
print(run.info.run_id, flush=True)
artifacts.save_frame(client, run.info.run_id, "whole", pd.DataFrame({"x": [1.0]}))
def killed_while_writing(frame, path, **kwargs):
    with open(path, "wb") as half:
        half.write(b"PAR1" + bytes(1000))
    os.kill(os.getpid(), 9)  # dies with its run RUNNING, as a SIGKILLed pipeline would
pd.DataFrame.to_parquet = killed_while_writing
artifacts.save_frame(client, run.info.run_id, "raw", pd.DataFrame({"x": [1.0]}))
"""


def test_runs_of_dead_processes_are_marked_failed_and_others_left_alone(tracking_store):
    import subprocess
    import sys

    client = tracking_store.client()
    experiment = client.create_experiment("reap")
    died = subprocess.run(
        [sys.executable, "-c", ORPHAN, tracking_store.uri, experiment],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert died.returncode == -9
    orphan = died.stdout.split()[0]
    mine = client.create_run(experiment, tags=tracking.owner_tags()).info.run_id
    elsewhere = client.create_run(
        experiment, tags={**tracking.owner_tags(), Runs.HOST: "another-host"}
    ).info.run_id
    unowned = client.create_run(experiment).info.run_id
    assert client.get_run(orphan).info.status == "RUNNING"

    frames = Path(client.get_run(orphan).info.artifact_uri.removeprefix("file://")) / "data"
    pid = client.get_run(orphan).data.tags[Runs.PID]
    half_written = frames / f".raw.parquet.{pid}.partial"
    assert half_written.exists()  # the killed process never reached its clean-up
    other_writer = frames / f".raw.parquet.{os.getpid()}.partial"  # not the dead process's
    other_writer.write_bytes(b"PAR1")

    assert tracking.reap_dead_runs(client, experiment) == [orphan]
    run = client.get_run(orphan)
    assert run.info.status == "FAILED"
    assert "ended while this run was RUNNING (killed or crashed)" in run.data.tags["pipeline.error"]
    assert not half_written.exists()
    assert other_writer.exists()
    assert pd.read_parquet(frames / "whole.parquet")["x"].tolist() == [1.0]
    assert not (frames / "raw.parquet").exists()
    for run_id in (mine, elsewhere, unowned):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert tracking.reap_dead_runs(client, experiment) == []


def test_half_written_frames_elsewhere_than_a_local_disk_are_not_looked_for(tmp_path):
    from mlflow_pipeline.store.artifacts import remove_partial_frames

    for uri in ("gs://bucket/1/abc/artifacts", "mlflow-artifacts:/1/abc", "s3://b/1/abc"):
        assert remove_partial_frames(uri, "123") == []
    (tmp_path / "data" / ".raw.parquet.123.partial").mkdir(parents=True)  # not a file
    assert remove_partial_frames(tmp_path.as_uri(), "123") == []
    assert remove_partial_frames(str(tmp_path), "12*") == []


def test_a_reused_pid_is_not_mistaken_for_the_owner(tracking_store):
    client = tracking_store.client()
    experiment = client.create_experiment("pid-reuse")
    tags = {**tracking.owner_tags(), Runs.PID_STARTED: "12.00"}  # same pid, other start
    run_id = client.create_run(experiment, tags=tags).info.run_id
    assert tracking.reap_dead_runs(client, experiment) == [run_id]


def test_transient_store_errors_are_retried_with_backoff(monkeypatch: pytest.MonkeyPatch):
    import sqlite3

    from mlflow.exceptions import MlflowException

    sleeps: list[float] = []
    monkeypatch.setattr(tracking.time, "sleep", sleeps.append)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as exc:
                raise MlflowException("(sqlite3.OperationalError) database is locked") from exc
        return "ok"

    assert tracking.retry_transient(flaky) == "ok"
    assert len(calls) == 3
    assert sleeps == [0.5, 1.0]


def test_retries_are_bounded_and_other_errors_fail_fast(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def always_locked():
        calls.append(1)
        raise OSError("database is locked")

    with pytest.raises(OSError, match="locked"):
        tracking.retry_transient(always_locked, attempts=4)
    assert len(calls) == 4

    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("no such column: x")

    with pytest.raises(ValueError, match="no such column"):
        tracking.retry_transient(broken)
    assert len(calls) == 1


def test_a_store_locked_by_another_writer_is_waited_for(tracking_store):
    """A real lock: another connection holds the database exclusively for a moment."""
    import sqlite3
    import threading

    db = sqlite3.connect(
        tracking_store.root / "mlflow.db", isolation_level=None, check_same_thread=False
    )
    db.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, lambda: db.execute("COMMIT"))
    release.start()
    try:
        # Both opening the store and writing to it wait for the lock to go.
        client = tracking.retry_transient(tracking_store.client)
        experiment = tracking.retry_transient(lambda: client.create_experiment("while-locked"))
    finally:
        release.join()
        db.close()
    assert client.get_experiment(experiment).name == "while-locked"


# ---- store faults, credentials, a new store, names ---------------------------------------


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        ("(sqlite3.OperationalError) attempt to write a readonly database", "is read-only"),
        ("[Errno 30] Read-only file system: '/s/mlruns/1'", "is read-only"),
        ("(sqlite3.OperationalError) database or disk is full", "no space left on the device"),
        ("[Errno 28] No space left on device", "no space left on the device"),
        ("(sqlite3.OperationalError) database is locked", "is locked by another process"),
        (
            "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: x "
            "(Caused by NewConnectionError('Failed to establish a new connection: "
            "[Errno 111] Connection refused'))",
            "cannot reach the tracking server at http://127.0.0.1:9: connection refused",
        ),
        ("(sqlite3.OperationalError) unable to open database file", "directory is missing"),
        (
            "API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with "
            "error code 401 != 200. Response body: 'You are not authenticated.'",
            "not authenticated (401); set MLFLOW_TRACKING_USERNAME",
        ),
    ],
)
def test_store_faults_read_as_one_plain_line(message: str, cause: str):
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise OSError(message)
        except OSError as inner:
            raise MlflowException("(raised as a result of Query-invoked autoflush)") from inner
    except MlflowException as exc:
        described = tracking.describe_store_fault(exc, "http://127.0.0.1:9")
    assert described is not None
    assert cause in described
    assert "\n" not in described


def test_other_errors_are_not_store_faults():
    assert tracking.describe_store_fault(ValueError("no such column: x"), "sqlite:///x") is None


def test_a_server_that_is_down_is_reported_at_once():
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    started = time.monotonic()
    with pytest.raises(
        StoreError, match=f"http://u:\\*\\*\\*@127.0.0.1:{port}: connection refused"
    ):
        tracking.check_reachable(f"http://u:secret@127.0.0.1:{port}")
    assert time.monotonic() - started < 2
    tracking.check_reachable("sqlite:////nowhere/mlflow.db")  # not a network store


def test_activate_moves_server_credentials_out_of_the_uri(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(tracking, "check_reachable", lambda uri: None)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    for name in tracking.HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the user's choice stays
    try:
        active = tracking.activate(
            tracking.Tracking(uri="https://ann:p%40ss@mlflow.example.com/x", artifact_root=None)
        )
        assert active.uri == "https://mlflow.example.com/x"
        assert mlflow.get_tracking_uri() == "https://mlflow.example.com/x"
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "ann"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def test_a_new_sqlite_store_is_created_once_under_a_lock(tmp_path: Path):
    """Four processes open the same brand-new store at once: one creates it, all succeed."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    code = (
        "import sys\n"
        "from mlflow.tracking import MlflowClient\n"
        "from mlflow_pipeline.store.tracking import prepare_sqlite\n"
        "prepare_sqlite(sys.argv[1])\n"
        "MlflowClient(sys.argv[1]).search_experiments()\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    assert (tmp_path / "new" / "mlflow.db.lock").exists()


def test_a_store_under_a_file_is_a_store_error(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot create its directory .*Not a directory"):
        tracking.prepare_sqlite(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mlflow.db'}")


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("customers", "customers"),
        ("..", "__"),
        ("../../etc", "___.._etc"),
        (".hidden", "_hidden"),
        ("my data/v2", "my_data_v2"),
        ("", "experiment"),
    ],
)
def test_experiment_folders_stay_under_the_artifact_root(tmp_path: Path, name: str, slug: str):
    store = tracking.Tracking(uri="sqlite:///x.db", artifact_root=str(tmp_path / "mlruns"))
    location = tracking.experiment_location(store, name)
    assert location == (tmp_path / "mlruns" / slug).as_uri()
    assert Path(location.removeprefix("file://")).resolve().parent == tmp_path / "mlruns"


def test_a_long_name_is_cut_with_a_digest():
    long = tracking._slug("x" * 300)
    assert len(long) == tracking.MAX_SLUG_CHARS
    assert long != tracking._slug("x" * 301)


def test_an_interrupted_process_ends_the_runs_it_left_running(tracking_store):
    client = tracking_store.client()
    experiment = client.create_experiment("interrupted")
    mine = client.create_run(experiment, tags=tracking.owner_tags()).info.run_id
    other = client.create_run(experiment, tags={Runs.PID: "1"}).info.run_id
    assert tracking.end_own_runs(client, experiment) == [mine]
    assert client.get_run(mine).info.status == "KILLED"
    assert client.get_run(other).info.status == "RUNNING"


def test_a_new_store_is_a_copy_of_an_empty_migrated_one(tmp_path, monkeypatch):
    """The first new store on a machine makes the schema template; later ones copy it and
    are the same store MLflow would have migrated, default experiment in the right place."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    tracking.prepare_sqlite(f"sqlite:///{tmp_path / 'first' / 'mlflow.db'}")
    template = tracking.schema_template()
    assert template.is_file()
    assert str(template).startswith(str(tmp_path / "cache"))
    with sqlite3.connect(template) as con:
        assert con.execute("select count(*) from experiments").fetchone() == (0,)
    second = tmp_path / "second" / "mlflow.db"
    tracking.prepare_sqlite(f"sqlite:///{second}")
    client = MlflowClient(f"sqlite:///{second}")
    with sqlite3.connect(second) as con, sqlite3.connect(tmp_path / "first" / "mlflow.db") as old:
        revision = "select version_num from alembic_version"
        assert con.execute(revision).fetchall() == old.execute(revision).fetchall()
    default = client.get_experiment("0")
    assert default.artifact_location.endswith(str(tmp_path / "mlruns" / "0"))
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_artifacts_of_a_sqlite_store_elsewhere_go_beside_it(tmp_path: Path, monkeypatch):
    """Issue 17 item 7: MLFLOW_TRACKING_URI at a database in another folder must not put its
    runs' artifacts into the project's mlruns/."""
    other = tmp_path / "elsewhere" / "runs.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    resolved = tracking.resolve_tracking(load_config())
    assert resolved.artifact_root == str(other.parent / "mlruns")
    assert not resolved.artifact_root.startswith(str(PROJECT_ROOT))
