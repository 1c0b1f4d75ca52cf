"""The shared tracking stack (scripts/stack.py: PostgreSQL + moto S3 + `mlflow server`, all on
loopback, each asking for a generated secret) runs the same pipeline as the embedded SQLite
store, with the same results, and keeps its secrets out of what the runs write."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2
import pytest
from botocore.exceptions import ClientError
from mlflow.tracking import MlflowClient

from .helpers import (
    CLASSIFICATION_METRICS,
    STAGES,
    TIMING_METRICS,
    VENV_BIN,
    Store,
    assert_ok,
    assert_stage_run_complete,
)
from .stack import ServerStore, Stack, is_running, remove_folder, stack_folder

pytestmark = pytest.mark.slow

# A fast model: the comparison is about the backends, not the model.
PIPELINE = ("model=logistic_regression", "model.max_iter=200")
MODEL_NAME = "breast_cancer"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A stack started by the script in a fresh folder; always stopped, nothing left running.

    This process's MLflow clients read the credentials of the stack's env file, as a user's
    would after sourcing it (the password survives a restart; the URI is passed each time).
    """
    root = stack_folder()
    stack = Stack(root / "stack")
    try:
        stack.start()
        with pytest.MonkeyPatch.context() as mp:
            for name, value in stack.env_file().items():
                if name not in ("MLFLOW_TRACKING_URI", "MLFLOW_PIPELINE_SERVER_URI"):
                    mp.setenv(name, value)
            yield stack
    finally:
        processes = stack.processes()
        stopped = stack.script("stop")
        remove_folder(root)
        assert_ok(stopped)
        left = [p.pid for p in processes if is_running(p)]
        assert left == [], f"stack processes still running after stop: {left}"


@pytest.fixture(scope="module")
def server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> ServerStore:
    return ServerStore(tmp_path_factory.mktemp("server-client"), stack=stack)


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(scope="module")
def first_runs(server: ServerStore, sqlite: Store) -> dict[str, tuple[Store, str]]:
    """The same pipeline once on each backend: backend -> (store, pipeline run id)."""
    runs = {}
    for name, store in (("server", server), ("sqlite", sqlite)):
        result = store.pipeline(*PIPELINE)
        assert_ok(result)
        runs[name] = (store, _pipeline_run_id(result))
    return runs


def _pipeline_run_id(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"^pipeline run (\w+) finished", result.stdout, re.MULTILINE)
    assert match, result.stdout[-2000:]
    return match.group(1)


def _outcome(store: Store, pipeline_run_id: str) -> dict:
    """What must not depend on the backend: statuses, metrics, data digests, registry."""
    pipeline = store.client.get_run(pipeline_run_id)
    stages = store.stage_runs(pipeline_run_id)
    assert sorted(stages) == sorted(STAGES)
    for run in stages.values():
        assert_stage_run_complete(store, run, pipeline_run_id)
    digests = {
        stage: {
            tag: value
            for tag, value in run.data.tags.items()
            # lineage.json names run ids, which differ by construction.
            if tag.startswith("pipeline.digest.") and not tag.endswith(".lineage")
        }
        for stage, run in stages.items()
    }
    return {
        "status": {stage: run.info.status for stage, run in stages.items()},
        "pipeline_status": pipeline.info.status,
        "metrics": {
            stage: {k: v for k, v in run.data.metrics.items() if k not in TIMING_METRICS}
            for stage, run in stages.items()
        },
        "digests": digests,
        "cache_keys": {s: r.data.tags.get("pipeline.cache.key") for s, r in stages.items()},
        "versions": store.version_numbers(MODEL_NAME),
        "champion": store.alias(MODEL_NAME, "champion"),
        "promotion": store.promotion(stages["register"].info.run_id),
    }


def test_same_pipeline_gives_the_same_results_on_the_server_and_on_sqlite(first_runs) -> None:
    server = _outcome(*first_runs["server"])
    sqlite = _outcome(*first_runs["sqlite"])

    assert set(server["status"].values()) == {"FINISHED"}
    assert server["pipeline_status"] == "FINISHED"
    assert server["metrics"]["evaluate"].keys() >= CLASSIFICATION_METRICS
    assert server["digests"]["split"].keys() >= {
        "pipeline.digest.output.train",
        "pipeline.digest.output.test",
    }
    assert server["versions"] == ["1"]
    assert server["champion"] == "1"
    # Exactly equal: same data, same digests, same metrics to the last bit, same decision.
    assert _differences(server, sqlite) == {}


def test_promotion_report_is_identical_on_both_backends(first_runs) -> None:
    reports = {}
    for name, (store, pipeline_run_id) in first_runs.items():
        register = store.stage_runs(pipeline_run_id)["register"]
        reports[name] = (
            store.promotion(register.info.run_id),
            register.data.tags["pipeline.digest.output.promotion"],
        )
    assert reports["server"] == reports["sqlite"]


def _differences(left: dict, right: dict, prefix: str = "") -> dict[str, tuple]:
    """``key path -> (left value, right value)`` for every leaf that differs."""
    found: dict[str, tuple] = {}
    for key in sorted(set(left) | set(right), key=str):
        a, b = left.get(key), right.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found |= _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found[f"{prefix}{key}"] = (a, b)
    return found


def test_artifacts_live_in_s3_behind_the_server(stack: Stack, first_runs) -> None:
    store, pipeline_run_id = first_runs["server"]
    stages = store.stage_runs(pipeline_run_id)
    # Clients see proxied artifacts only: they need no S3 credentials.
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in stages.values())

    keys = stack.s3_keys()
    for stage, path in (
        ("ingest", "data/raw.parquet"),
        ("split", "data/train.parquet"),
        ("evaluate", "data/metrics.parquet"),
        ("register", "lineage.json"),
    ):
        run_id = stages[stage].info.run_id
        assert any(
            k.startswith("artifacts/") and k.endswith(f"{run_id}/artifacts/{path}") for k in keys
        ), (stage, path, keys)
    # The registered model's files (a logged model, under the experiment's models/ folder).
    assert any(k.endswith("/MLmodel") for k in keys), keys
    assert any(k.endswith("/model.skops") for k in keys), keys


def test_rerun_on_the_server_is_all_cache_hits(server: ServerStore, first_runs) -> None:
    # The first run made v1 champion: the profile stage checks the data against it once.
    result = server.pipeline(*PIPELINE)
    assert_ok(result)
    assert "cache: 6 hit(s)" in result.stdout, result.stdout[-2000:]
    assert "1 ran [profile]" in result.stdout, result.stdout[-2000:]
    assert "nothing registered, no alias moved" in result.stdout
    again = server.pipeline(*PIPELINE)
    assert_ok(again)
    assert "cache: 7 hit(s)" in again.stdout, again.stdout[-2000:]
    assert server.version_numbers(MODEL_NAME) == ["1"]


def test_the_stack_listens_on_loopback_only(stack: Stack) -> None:
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for process in stack.processes()
        for conn in _connections(process)
        if conn.status == psutil.CONN_LISTEN
    }
    ports = stack.state["ports"]
    assert {port for _, port in listening} == {ports["mlflow"], ports["s3"], ports["pg"]}
    assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening


def _connections(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []


def test_start_and_status_report_a_running_stack(stack: Stack) -> None:
    again = stack.start()
    assert again.stdout.startswith("already running")
    assert again.stdout.splitlines()[-1] == stack.tracking_uri

    status = stack.script("status")
    assert_ok(status)
    for component in ("postgres", "s3", "mlflow"):
        assert re.search(rf"^{component}\s+pid \d+\s+127\.0\.0\.1:\d+", status.stdout, re.M)
    assert "(health: OK)" in status.stdout


PG_BIN = Path(os.environ.get("STACK_PG_BIN", "/usr/lib/postgresql/15/bin"))
# Loopback requests must not go through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def test_every_server_wants_the_stacks_secrets_and_no_run_writes_them(
    stack: Stack, server: ServerStore, first_runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    for name in ("secrets.json", "env", "s3.env", "pgpass", "basic_auth.ini"):
        assert stat.S_IMODE((stack.root / name).stat().st_mode) == 0o600, name
    secrets = stack.secrets
    db_password = secrets["postgres_mlflow_password"]

    # PostgreSQL: no login without the role's password, for the app's role or the superuser.
    for user in ("mlflow", "postgres"):
        with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
            _pg_connect(stack, user)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            _pg_connect(stack, user, password="made-up")
    # The app's role reaches its own database only, owns it, and is not a superuser.
    with pytest.raises(psycopg2.OperationalError, match="no pg_hba.conf entry"):
        _pg_connect(stack, "mlflow", "postgres", password=db_password)
    conn = _pg_connect(stack, "mlflow", password=db_password)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
                "WHERE rolname = current_user"
            )
            assert cur.fetchone() == (False, False, False)
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'")
            assert cur.fetchone() == ("mlflow",)
    finally:
        conn.close()

    # S3: a made-up key, the right key id with a made-up secret, no signature, moto's own
    # control API (it could switch authentication off): all refused.
    key_id = stack.env_file("s3.env")["AWS_ACCESS_KEY_ID"]
    for made_up_id, code in (("AKIAMADEUPKEY0000000", "InvalidAccessKeyId"), (key_id, "Signature")):
        with pytest.raises(ClientError, match=code):
            stack.s3_client(made_up_id, "made-up-secret").list_objects_v2(Bucket="mlflow")
    s3_url = stack.state["s3_endpoint_url"]
    assert _status("GET", f"{s3_url}/mlflow") == 403
    assert _status("POST", f"{s3_url}/moto-api/reset-auth", b"inf") == 403
    assert _status("GET", f"{s3_url}/moto-api/data.json") == 403
    assert len(stack.s3_keys()) > 10  # the stack's own key still works

    # MLflow's REST API: 401 without credentials or with a wrong password.
    api = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    client = stack.env_file()
    user, password = client["MLFLOW_TRACKING_USERNAME"], client["MLFLOW_TRACKING_PASSWORD"]
    assert _status("GET", api) == 401
    assert _status("GET", api, headers=_basic_auth(user, "made-up")) == 401
    assert _status("GET", api, headers=_basic_auth(user, password)) == 200
    # The pipeline without the env file's credentials: one line naming the 401, nothing run.
    anonymous = server.env()
    del anonymous["MLFLOW_TRACKING_USERNAME"], anonymous["MLFLOW_TRACKING_PASSWORD"]
    refused = subprocess.run(
        [VENV_BIN / "mlflow-pipeline", *PIPELINE, "tracking=server"]
        + [f"tracking.root={server.root}"],
        cwd=server.root,
        env=anonymous,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "not authenticated (401); set MLFLOW_TRACKING_USERNAME" in refused.stderr, (
        refused.stderr[-2000:]
    )
    assert "Traceback" not in refused.stderr

    # The runs made with the env file's credentials (first_runs) wrote none of the stack's
    # secrets: not in the database, not in an S3 object, not in a log or a Hydra output.
    written = _everything_written(stack, server)
    _, pipeline_run_id = first_runs["server"]
    assert pipeline_run_id.encode() in written["pg_dump"]  # the real store was searched
    leaks = sorted(
        (name, where)
        for name, value in secrets.items()
        for where, content in written.items()
        if value.encode() in content
    )
    assert leaks == [], leaks


def _pg_connect(stack: Stack, user: str, database: str = "mlflow", password: str | None = None):
    # No password file either: only what is passed here may authenticate.
    return psycopg2.connect(
        host="127.0.0.1",
        port=stack.state["ports"]["pg"],
        user=user,
        dbname=database,
        password=password,
        passfile=str(stack.root / "no-such-pgpass"),
        connect_timeout=10,
    )


def _status(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> int:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with HTTP.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _everything_written(stack: Stack, server: ServerStore) -> dict[str, bytes]:
    """Where -> content: a dump of the tracking database, every S3 object, the stack's logs and
    every file under the client's working directory."""
    dump = subprocess.run(
        [PG_BIN / "pg_dump", "-w", "-h", "127.0.0.1", "-p", str(stack.state["ports"]["pg"])]
        + ["-U", "mlflow", "mlflow"],
        env={**os.environ, "PGPASSFILE": str(stack.root / "pgpass")},
        capture_output=True,
        timeout=120,
        check=True,
    )
    written = {"pg_dump": dump.stdout}
    s3 = stack.s3_client()
    for key in stack.s3_keys():
        written[f"s3://mlflow/{key}"] = s3.get_object(Bucket="mlflow", Key=key)["Body"].read()
    for folder in (stack.root / "logs", server.root):
        written |= {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return written


SWEEP = (
    "-m",
    "hydra/launcher=parallel",
    "hydra.launcher.n_jobs=4",
    *PIPELINE,
    "model.C=0.01,0.03,0.1,0.3,1.0,3.0,10.0,30.0",
    "tracking.experiment_name=server_sweep",
    "registry.model_name=server_sweep",
)


def _sweep_outcome(store: Store) -> dict:
    """Per job config: status and metrics; the best config; the registered versions."""
    experiment = store.client.get_experiment_by_name("server_sweep")
    in_sweep = store.client.search_runs([experiment.experiment_id], max_results=1000)
    [sweep] = [r for r in in_sweep if r.data.tags.get("pipeline.kind") == "sweep"]
    pipelines = [r for r in in_sweep if r.data.tags.get("pipeline.kind") == "pipeline"]
    roles = sorted(r.data.tags.get("pipeline.sweep.role") for r in pipelines)
    assert roles == ["job"] * 8 + ["register", "shared"]
    assert {j.data.tags.get("mlflow.parentRunId") for j in pipelines} == {sweep.info.run_id}
    assert {r.info.status for r in in_sweep} == {"FINISHED"}, [
        (r.info.run_name, r.info.status) for r in in_sweep
    ]
    assert len({j.data.tags["pipeline.pid"] for j in pipelines}) > 1  # parallel processes
    jobs = {}
    for job in (p for p in pipelines if p.data.tags["pipeline.sweep.role"] == "job"):
        config = next(o for o in job.data.tags["pipeline.overrides"].split() if "model.C=" in o)
        [evaluate] = store.client.search_runs(
            [experiment.experiment_id],
            f"tags.`pipeline.run_id` = '{job.info.run_id}' and tags.`pipeline.stage` = 'evaluate'",
        )
        jobs[config] = {k: v for k, v in evaluate.data.metrics.items() if k in ("roc_auc", "f1")}
    best = sweep.data.tags["pipeline.sweep.best_overrides"]
    return {
        "jobs": jobs,
        "best": next(o for o in best.split() if "model.C=" in o),
        "counts": (sweep.data.metrics["jobs"], sweep.data.metrics["jobs_failed"]),
        "versions": store.version_numbers("server_sweep"),
    }


def test_eight_jobs_four_in_parallel_same_on_the_server_and_on_sqlite(
    server: ServerStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sqlite = Store(tmp_path_factory.mktemp("sqlite-sweep"))  # a brand-new store
    outcomes = {}
    for name, store in (("server", server), ("sqlite", sqlite)):
        result = store.pipeline(*SWEEP)
        assert_ok(result)
        assert "Traceback" not in result.stderr
        outcomes[name] = _sweep_outcome(store)
    assert len(outcomes["server"]["jobs"]) == 8
    assert outcomes["server"]["counts"] == (8, 0)
    assert outcomes["server"]["versions"] == ["1"]  # the best job only
    assert outcomes["server"] == outcomes["sqlite"]


def test_stop_then_start_keeps_runs_registry_and_artifacts(
    stack: Stack, first_runs, tmp_path: Path
) -> None:
    # Last in this module: it restarts the stack (on new free ports).
    # Over 8 MB, boto3 uploads in parts: the replay must map the recorded upload ids.
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 2**20))
    before = MlflowClient(stack.tracking_uri)
    big_run = before.create_run(before.create_experiment("server_big_artifact")).info.run_id
    before.log_artifact(big_run, str(big))
    before.set_terminated(big_run)
    stopped = stack.script("stop")
    assert_ok(stopped)
    assert stopped.stdout.startswith("stopped ")
    assert stack.script("status").returncode == 3  # nothing running
    assert "not running" in stack.script("stop").stdout  # stop is idempotent

    stack.start()
    # A new client: the old one's URI names the old port.
    after = ServerStore(tmp_path, stack=stack)
    assert after.alias(MODEL_NAME, "champion") == "1"
    # The artifacts came back from the S3 recording: evaluate, forced to recompute, reads the
    # model and the test set through the server and gets the same metrics.
    _, first_id = first_runs["server"]
    result = after.pipeline(
        *PIPELINE,
        "steps=[evaluate]",
        "+cache.stages.evaluate=recompute",
        f"runner.upstream_run_id={first_id}",
    )
    assert_ok(result)
    assert "1 ran [evaluate]" in result.stdout, result.stdout[-2000:]
    evaluate = after.stage_runs(_pipeline_run_id(result))["evaluate"]
    first = after.stage_runs(first_id)["evaluate"]
    restored = after.client.download_artifacts(big_run, "big.bin", str(tmp_path / "restored"))
    assert Path(restored).read_bytes() == big.read_bytes()
    assert evaluate.info.status == "FINISHED"
    assert evaluate.data.tags["pipeline.cache.status"] != "hit"
    assert _model_metrics(evaluate) == _model_metrics(first)


def _model_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k in CLASSIFICATION_METRICS}
