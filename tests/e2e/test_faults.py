"""Faults and hostile input through the real CLI, in real processes: secrets never written, a
pickled champion never loaded, store faults as one clear line within seconds, a brand-new
store started by several processes at once, names that would escape the artifact root, and
Ctrl-C.

Mounting a tmpfs (read-only and full stores) needs root; those cases skip without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from mlflow_pipeline.store.tracking import reap_dead_runs
from mlflow_pipeline.tags import Sweep

from .helpers import (
    CHAMPION_DATA,
    CHAMPION_MODEL,
    CHAMPION_OVERRIDES,
    TIMEOUT_S,
    VENV_BIN,
    Store,
    assert_ok,
    tail,
    write_classification_csv,
)

pytestmark = pytest.mark.slow

# What each store fault may cost at most, start to exit, on a loaded 2-core CI machine: they
# take 3-12 s here (the pipeline's imports alone ~3 s); what this guards against is MLflow's
# own retries, which took about 4 minutes to report a server that was down.
FAULT_DEADLINE_S = 60
SECRET_TOKEN = "tok3n-SECRET-1a2b3c"
SECRET_KEY = "api-SECRET-4d5e6f"
SECRET_PASSWORD = "pw-SECRET-7g8h9i"
INTERRUPTED = "mlflow-pipeline: interrupted; runs marked KILLED"
QUICK_STEPS = "steps=[ingest,profile,validate,split]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


def timed(store: Store, *args: str | Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = store.run(*args)
    return result, time.monotonic() - started


def pipeline_args(store: Store, csv: Path, *overrides: str) -> list[str | Path]:
    return [
        VENV_BIN / "mlflow-pipeline",
        *CHAMPION_OVERRIDES,
        f"data.path={csv}",
        f"tracking.root={store.root}",
        *overrides,  # last: they win
    ]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Non-zero exit; one error line, the last, naming every needle; no traceback anywhere.
    (Python warnings of the stages that ran before the fault may precede it.)"""
    context = f"--- stdout\n{tail(result.stdout)}\n--- stderr\n{tail(result.stderr)}"
    assert result.returncode != 0, context
    assert "Traceback" not in result.stderr + result.stdout, context
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("mlflow-pipeline:")]
    assert len(errors) == 1, context
    assert lines[-1] == errors[0], context
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in the error\n{context}"


def assert_nothing_left_running(uri: str) -> None:
    """Every run still RUNNING after a fault is one the next run reaps (its process is gone)."""
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    for experiment in experiments:
        reap_dead_runs(client, experiment)
    running = client.search_runs(experiments, "attributes.status = 'RUNNING'")
    assert not running, [(r.info.run_name, r.data.tags) for r in running]


@contextlib.contextmanager
def tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted at ``path`` (skips the test when mounting is not
    allowed); unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


@pytest.fixture
def csv(store: Store) -> Path:
    return write_classification_csv(store.root / CHAMPION_DATA)


# ---- secrets -------------------------------------------------------------------------------


class Webhook:
    """A local HTTP server that records every request body it gets."""

    def __init__(self) -> None:
        bodies: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token={SECRET_TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def every_file(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def test_secrets_are_in_no_byte_a_run_writes(store: Store, csv: Path):
    """A webhook token and a secret-named key: one run that registers (params, tags, config,
    cache manifests, lineage) and one that fails and alerts. Not one byte of the store, the
    artifacts, Hydra's output dir, the console or the alert holds either secret."""
    webhook = Webhook()
    secrets = (
        f"alerts.webhook='{webhook.url}'",
        f"+data.api_token={SECRET_KEY}",
    )
    try:
        good = store.run(*pipeline_args(store, csv, *secrets))
        assert_ok(good)
        failed = store.run(
            *pipeline_args(store, csv, *secrets, "evaluation.thresholds.roc_auc.min=0.9999")
        )
    finally:
        webhook.close()
    assert failed.returncode == 1, tail(failed.stderr)
    assert len(webhook.bodies) == 1  # the failure alert reached the hook
    alert = json.loads(webhook.bodies[0])
    assert alert["kind"] == "failure"
    pipeline = store.runs_of_kind("pipeline")[0]
    assert pipeline.data.params["data.api_token"] == "***"
    assert pipeline.data.params["alerts.webhook"].endswith("/***")
    assert "+data.api_token=***" in pipeline.data.tags["pipeline.overrides"]
    written = {str(p.relative_to(store.root)): p.read_bytes() for p in every_file(store.root)}
    assert any(name.endswith("lineage.json") for name in written)
    assert any(name.startswith("outputs") for name in written)  # Hydra's run dir and log
    written["stdout"] = (good.stdout + failed.stdout).encode()
    written["stderr"] = (good.stderr + failed.stderr).encode()
    written["alert"] = webhook.bodies[0]
    for secret in (SECRET_TOKEN, SECRET_KEY):
        leaks = [name for name, data in written.items() if secret.encode() in data]
        assert not leaks, (secret, leaks)


def test_a_sweep_writes_no_secret(store: Store, csv: Path):
    """A sweep: Hydra's multirun.yaml and job logs, the sweep run's tags and summary, and the
    best job's register run (which gets the secret back from memory) hold no secret."""
    webhook = Webhook()
    try:
        command = pipeline_args(
            store, csv, "model.C=0.5,1.0", f"+data.api_token={SECRET_KEY}",
            f"alerts.webhook='{webhook.url}'",
        )  # fmt: skip
        result = store.run(command[0], "-m", *command[1:])  # Hydra wants -m first
    finally:
        webhook.close()
    assert_ok(result)
    assert (store.root / "multirun").is_dir()
    [sweep] = store.runs_of_kind("sweep")
    assert "+data.api_token=***" in sweep.data.tags["pipeline.sweep_overrides"]
    assert store.alias(CHAMPION_MODEL, "champion") == "1"
    written = {str(p): p.read_bytes() for p in every_file(store.root)}
    written["console"] = (result.stdout + result.stderr).encode()
    for secret in (SECRET_TOKEN, SECRET_KEY):
        leaks = [name for name, data in written.items() if secret.encode() in data]
        assert not leaks, (secret, leaks)


def test_a_tracking_server_password_is_in_no_byte_a_run_writes(store: Store, csv: Path):
    """``http://user:PASSWORD@host``: a real ``mlflow server``; the password reaches the server
    as basic auth and is written nowhere: not in the server's store, artifacts or output, not in
    the run's params or Hydra's dir, not on the console."""
    port = free_port()
    server_root = store.root / "server"
    server_root.mkdir()
    env = {**store.env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI")
    with (server_root / "out").open("w") as out:
        server = subprocess.Popen(
            [
                VENV_BIN / "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{server_root / 'mlflow.db'}",
                "--artifacts-destination",
                str(server_root / "artifacts"),
            ],
            cwd=server_root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_health(f"http://127.0.0.1:{port}", server)
        uri = f"http://mlflow-user:{SECRET_PASSWORD}@127.0.0.1:{port}"
        result = store.run(*pipeline_args(store, csv, f"tracking.uri='{uri}'", QUICK_STEPS))
        assert_ok(result)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    client = MlflowClient(tracking_uri=f"sqlite:///{server_root / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == CHAMPION_MODEL]
    [pipeline] = client.search_runs([experiment.experiment_id], "tags.`pipeline.kind` = 'pipeline'")
    assert pipeline.data.params["tracking.uri"] == f"http://mlflow-user:***@127.0.0.1:{port}"
    written = {str(p): p.read_bytes() for p in every_file(store.root)}
    written["stdout"], written["stderr"] = result.stdout.encode(), result.stderr.encode()
    leaks = [name for name, data in written.items() if SECRET_PASSWORD.encode() in data]
    assert not leaks


def _wait_for_health(url: str, server: subprocess.Popen, timeout_s: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server at {url} not healthy within {timeout_s} s")


# ---- a pickled champion --------------------------------------------------------------------


class Tripwire:
    """A "model" whose unpickling creates ``marker``: proof that its code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.marker),))


def register_pickled_champion(store: Store, marker: Path) -> str:
    """Log a cloudpickle "model" that touches ``marker`` when loaded, register it as a new
    version of the champion's model with the champion's lineage tags (a tampered registry),
    and move ``champion`` to it. Returns the version."""
    client = store.client
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", store.uri)
        mp.setenv("MLFLOW_REGISTRY_URI", store.uri)
        try:
            experiment = client.create_experiment(
                "attacker", artifact_location=(store.root / "attacker").as_uri()
            )
            with mlflow.start_run(experiment_id=experiment):
                info = mlflow.sklearn.log_model(
                    Tripwire(marker),
                    name="model",
                    serialization_format="cloudpickle",
                    pip_requirements=[],
                )
            tags = dict(client.get_model_version(CHAMPION_MODEL, "1").tags)
            version = mlflow.register_model(info.model_uri, CHAMPION_MODEL, tags=tags).version
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
    client.set_registered_model_alias(CHAMPION_MODEL, "champion", str(version))
    assert not marker.exists()
    return str(version)


def test_a_pickled_champion_is_refused_without_running_it(champion_store: Store, tmp_path: Path):
    """score, serve, reproduce and the register stage's re-score refuse a cloudpickle champion
    without unpickling it; ``--allow-unsafe-model`` is what it takes to load it."""
    marker = tmp_path / "pickle-ran"
    version = register_pickled_champion(champion_store, marker)
    store = champion_store
    champion = f"models:/{CHAMPION_MODEL}@champion"
    why = ("refusing to load the model", f"models:/{CHAMPION_MODEL}/{version}", "cloudpickle")

    scored, seconds = timed(
        store, VENV_BIN / "mlflow-pipeline", "score", champion,
        "--input", CHAMPION_DATA, "--output", "out.csv",
    )  # fmt: skip
    assert_one_line_error(scored, *why)
    assert not (store.root / "out.csv").exists()

    port = free_port()
    served, seconds = timed(
        store, VENV_BIN / "mlflow-pipeline", "serve", champion, "--port", str(port)
    )
    assert_one_line_error(served, *why)
    assert "serving" not in served.stdout  # refused before a server started
    assert seconds < FAULT_DEADLINE_S

    reproduced = store.run(VENV_BIN / "mlflow-pipeline", "reproduce", champion)
    assert_one_line_error(reproduced, *why)

    # The register stage re-scores the champion: it cannot, so it does not replace it blindly.
    registered = store.pipeline(
        *CHAMPION_OVERRIDES, f"data.path={CHAMPION_DATA}", "tracking.experiment_name=faults"
    )
    output = registered.stdout + registered.stderr
    assert "refusing to load the model" in output, tail(output)
    assert "Traceback" not in output
    assert not marker.exists()

    # The marker does work: allowing unsafe models runs the pickle's code.
    store.run(
        VENV_BIN / "mlflow-pipeline", "score", champion, "--allow-unsafe-model",
        "--input", CHAMPION_DATA, "--output", "out.csv",
    )  # fmt: skip
    assert marker.exists()


# ---- store faults --------------------------------------------------------------------------


def test_a_tracking_server_that_is_down_fails_in_seconds(store: Store, csv: Path):
    uri = f"http://127.0.0.1:{closed_port()}"
    result, seconds = timed(store, *pipeline_args(store, csv, f"tracking.uri='{uri}'"))
    assert_one_line_error(result, f"cannot reach the tracking server at {uri}: connection refused")
    assert seconds < FAULT_DEADLINE_S


def test_a_store_whose_directory_cannot_exist_fails_in_one_line(store: Store, csv: Path):
    uri = f"sqlite:///{csv}/sub/mlflow.db"  # under a file
    result, seconds = timed(store, *pipeline_args(store, csv, f"tracking.uri='{uri}'"))
    assert_one_line_error(result, f"cannot open the tracking store {uri}", "Not a directory")
    assert seconds < FAULT_DEADLINE_S


def test_a_locked_store_fails_in_one_line_and_leaves_nothing_running(
    store: Store, csv: Path, empty_store_template: Path
):
    shutil.copy2(empty_store_template, store.root / "mlflow.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
            str(store.root / "mlflow.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result, seconds = timed(store, *pipeline_args(store, csv))
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(result, f"the tracking store {store.uri} is locked", "database is")
    assert seconds < FAULT_DEADLINE_S
    assert_nothing_left_running(store.uri)


def test_a_read_only_store_fails_in_one_line(store: Store, csv: Path, empty_store_template: Path):
    with tmpfs(store.root / "ro", 64 * 1024) as root:
        shutil.copy2(empty_store_template, root / "mlflow.db")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        remount(root, "ro")
        result, seconds = timed(store, *pipeline_args(store, csv, f"tracking.uri={uri}"))
        assert_one_line_error(result, f"the tracking store {uri} is read-only")
        assert seconds < FAULT_DEADLINE_S
        remount(root, "rw")
        assert_nothing_left_running(uri)


def test_a_full_disk_fails_in_one_line_and_the_next_run_reaps(
    store: Store, csv: Path, empty_store_template: Path
):
    """The store fills up in the middle of the pipeline; once there is room again, the next run
    marks the runs the full disk left RUNNING as FAILED, and reuses nothing half-written."""
    size_kb = empty_store_template.stat().st_size // 1024 + 200
    with tmpfs(store.root / "full", size_kb) as root:
        shutil.copy2(empty_store_template, root / "mlflow.db")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        overrides = (f"tracking.uri={uri}", f"tracking.root={root}")
        result, seconds = timed(store, *pipeline_args(store, csv, *overrides))
        assert_one_line_error(
            result, f"no space left on the device holding the tracking store {uri}"
        )
        assert seconds < FAULT_DEADLINE_S
        remount(root, f"size={64 * 1024}k")
        assert_ok(store.run(*pipeline_args(store, csv, *overrides)))
        client = MlflowClient(tracking_uri=uri)
        experiments = [e.experiment_id for e in client.search_experiments()]
        assert not client.search_runs(experiments, "attributes.status = 'RUNNING'")
        # What the rerun reused was complete: finished and stored, none of the reaped runs.
        for hit in client.search_runs(experiments, "tags.`pipeline.cache.status` = 'hit'"):
            source = client.get_run(hit.data.tags["pipeline.cache.source_run"])
            assert source.info.status == "FINISHED"
            assert source.data.tags.get("pipeline.cache.stored") == "true"


# ---- a brand-new store, several processes ----------------------------------------------------


def test_runs_started_together_on_a_brand_new_store_all_succeed(store: Store, csv: Path):
    uri = f"sqlite:///{store.root / 'new' / 'mlflow.db'}"
    env = store.env()
    processes = [
        subprocess.Popen(
            [str(a) for a in pipeline_args(store, csv, f"tracking.uri={uri}", "steps=[ingest]")],
            cwd=store.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=TIMEOUT_S) for p in processes]
    for process, (_out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, tail(err)
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    pipelines = client.search_runs(experiments, "tags.`pipeline.kind` = 'pipeline'")
    assert [r.info.status for r in pipelines] == ["FINISHED"] * 3


# ---- names that become paths -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", "../../escaped"])
def test_a_name_cannot_put_artifacts_outside_the_artifact_root(store: Store, csv: Path, name: str):
    root = store.root / "inside"
    result = store.run(
        VENV_BIN / "mlflow-pipeline", *CHAMPION_OVERRIDES, f"data.path={csv}",
        f"data.name='{name}'", "steps=[ingest]", f"tracking.root={root}",
        f"tracking.uri=sqlite:///{root / 'mlflow.db'}",
    )  # fmt: skip
    assert_ok(result)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    location = Path(experiment.artifact_location.removeprefix("file://")).resolve()
    assert location.parent == (root / "mlruns").resolve()
    outside = {p.name for p in store.root.iterdir()} - {
        "inside", "tmp", "outputs", CHAMPION_DATA, "mlflow.db",
    }  # fmt: skip
    assert not outside
    assert not (store.root.parent / "escaped").exists()


# ---- Ctrl-C ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry", ["mlflow-pipeline", "python -m mlflow_pipeline.cli main", "runner=projects"]
)
def test_ctrl_c_prints_one_line_marks_runs_killed_and_exits_130(
    store: Store, csv: Path, entry: str
):
    # recompute: the signal must find stages running, not a run of cache hits finishing.
    overrides = [
        *CHAMPION_OVERRIDES, f"data.path={csv}", f"tracking.root={store.root}",
        "cache.policy=recompute",
    ]  # fmt: skip
    # runner=projects: the stage's `mlflow run` process gets it too, once it logs from inside
    # its stage run.
    ready = "[validate]" if entry == "runner=projects" else "stage validate"
    if entry == "runner=projects":
        command = [str(VENV_BIN / "mlflow-pipeline"), *overrides, "runner=projects"]
    elif entry == "mlflow-pipeline":
        command = [str(VENV_BIN / "mlflow-pipeline"), *overrides]
    else:
        command = [
            str(VENV_BIN / "python"), "-m", "mlflow_pipeline.cli", "main",
            "--hydra-options", " ".join(overrides),
        ]  # fmt: skip
    out, err, context = _ctrl_c(store, command, ready)
    assert (err + out).count("interrupted") == 1, context  # one line, whoever was running
    assert "Traceback" not in err + out, context
    [pipeline] = store.runs_of_kind("pipeline")
    assert pipeline.info.status == "KILLED"
    statuses = {r.info.run_name: r.info.status for r in store.children(pipeline.info.run_id)}
    assert set(statuses.values()) <= {"FINISHED", "KILLED"}, statuses


@pytest.mark.parametrize(
    ("launcher", "group"),
    [
        pytest.param([], True, id="sequential-terminal"),
        # SIGINT to the sweep's process alone: the launcher's abort kills its workers, which
        # cannot end their own runs (these had stayed RUNNING).
        pytest.param(["hydra/launcher=parallel"], False, id="joblib-process-only"),
    ],
)
def test_ctrl_c_in_a_sweep_marks_the_sweep_run_killed_too(
    store: Store, csv: Path, launcher: list[str], group: bool
):
    # The sweep run had ended FAILED while its interrupted job's runs were KILLED.
    command = [
        str(VENV_BIN / "mlflow-pipeline"), "-m", *CHAMPION_OVERRIDES, f"data.path={csv}",
        f"tracking.root={store.root}", "model.C=0.1,1.0",
        "+cache.stages.train=recompute", *launcher,
    ]  # fmt: skip
    _, _, context = _ctrl_c(store, command, "[job 0]", group=group)
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "KILLED", context
    assert [r.info.run_name for r in store.runs() if r.info.status == "RUNNING"] == [], context
    jobs = [r for r in store.runs_of_kind("pipeline") if r.data.tags.get(Sweep.ROLE) == "job"]
    statuses = {r.info.status for r in jobs}
    assert "KILLED" in statuses, context
    assert statuses <= {"KILLED", "FINISHED"}, context


def _ctrl_c(
    store: Store, command: list[str], ready: str, group: bool = True
) -> tuple[str, str, str]:
    """Start ``command``; once a line holds ``ready``, a terminal's Ctrl-C (SIGINT to the
    whole process group; to the process alone unless ``group``). Checks that it exited 130
    with the one interrupted line; returns its stdout, stderr and both tails for assertion
    messages."""
    env = {**store.env(), "PYTHONUNBUFFERED": "1"}
    out_path, err_path = store.root / "interrupted.out", store.root / "interrupted.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            command, cwd=store.root, env=env, stdout=out, stderr=err, start_new_session=True
        )
    try:
        _wait_for_line((out_path, err_path), ready, process)
        if group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGINT)
        process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
    out, err = out_path.read_text(), err_path.read_text()
    context = f"--- stdout\n{tail(out)}\n--- stderr\n{tail(err)}"
    assert process.returncode == 130, context
    assert err.strip().splitlines()[-1] == INTERRUPTED, context
    return out, err, context


def _wait_for_line(
    logs: tuple[Path, ...], needle: str, process: subprocess.Popen, timeout_s: float = 120
) -> None:
    """Until a line of the process's logs (Hydra logs to stdout, plain logging to stderr)
    holds ``needle``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(needle in path.read_text() for path in logs):
            return
        assert process.poll() is None, "\n".join(tail(p.read_text()) for p in logs)
        time.sleep(0.05)
    pytest.fail(f"no {needle!r} in the logs within {timeout_s} s")
