"""A sweep on a Ray cluster (``hydra/launcher=ray_cluster``): a real one-machine cluster started
with scripts/ray.sh runs the jobs, with the same outcome as the joblib launcher."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from mlflow.entities import Run

from .helpers import CLASSIFICATION_METRICS, REPO, VENV_BIN, Store, assert_ok

pytestmark = pytest.mark.slow

RAY_SCRIPT = REPO / "scripts" / "ray.sh"
HOST = "127.0.0.1"
# Two jobs with a fast model: the comparison is about the launchers, not the model.
SWEEP = ("-m", "model=logistic_regression", "model.C=0.1,1.0")
JOBLIB = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
MODEL_NAME = "breast_cancer"
# Ray rewrites 127.0.0.1 to the machine's network address unless both the cluster and the
# driver (the CLI) have this; scripts/ray.sh writes it to the cluster's env file.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@dataclass
class RayCluster:
    """A cluster started by scripts/ray.sh: Ray's sessions and logs in ``root`` (short: Unix
    socket paths under it are limited), GCS on ``port`` and the five ports after it. Started
    from ``workdir``, where its workers run."""

    root: Path
    port: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def workdir(self) -> Path:
        return self.root / "work"

    @property
    def logs(self) -> Path:
        return self.root / "session_latest" / "logs"

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        """``scripts/ray.sh COMMAND ROOT``; only ``start`` is told the port (the others read
        it from ROOT/env, as a user's would)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "RAY_PORT"}
        if command == "start":
            env["RAY_PORT"] = str(self.port)
        return subprocess.run(
            ["bash", str(RAY_SCRIPT), command, str(self.root)],
            cwd=self.workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def processes(self) -> list[psutil.Process]:
        """Every live process of this cluster: those ``ray start`` gave our folder or GCS
        address as a flag, and their children (workers, agents)."""
        in_root = re.compile(re.escape(str(self.root)) + "(/|$)")
        found: dict[int, psutil.Process] = {}
        for top in psutil.process_iter(["cmdline"]):
            flags = [a for a in top.info["cmdline"] or [] if a.startswith("--")]
            if any(in_root.search(a) or a.endswith(f"={self.address}") for a in flags):
                try:
                    found.update({p.pid: p for p in (top, *top.children(recursive=True))})
                except psutil.NoSuchProcess:
                    continue
        return [p for p in found.values() if _alive(p)]


@dataclass
class ClusterStore(Store):
    """A Store whose CLI runs may join a Ray cluster on loopback."""

    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port_block(size: int = 6) -> int:
    """A port with the ``size - 1`` ports after it free too (scripts/ray.sh uses them all)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            base = probe.getsockname()[1]
        if base + size > 65535:
            continue
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """A cluster for this module, always stopped by pid (the script's `stop`; `ray stop` would
    stop every Ray on the machine), and nothing of it left running."""
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="ray-e2e-", dir="/tmp")), _free_port_block())
    try:
        assert_ok(cluster.script("start"))
        yield cluster
    finally:
        processes = cluster.processes()
        stopped = cluster.script("stop")
        left = [p for p in [*processes, *cluster.processes()] if _alive(p)]
        for process in left:  # never leave a cluster behind, even when the script failed
            try:
                process.kill()
            except psutil.NoSuchProcess:
                continue
        shutil.rmtree(cluster.root, ignore_errors=True)
        assert_ok(stopped)
        assert [p.pid for p in left] == [], "Ray processes still running after stop"


@dataclass
class Sweeps:
    ray: ClusterStore
    joblib: Store
    ray_log: str  # the end of the Ray sweep's output (its workers' lines too), for failures


@pytest.fixture(scope="module")
def sweeps(cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory) -> Sweeps:
    """The same sweep on the Ray cluster and with the joblib launcher, each in a fresh store."""
    ray = ClusterStore(tmp_path_factory.mktemp("ray-sweep"), extra_env=LOOPBACK_ONLY)
    # The embedded store (what a job without $MLFLOW_TRACKING_URI would write to) is elsewhere:
    # runs in ray.uri prove that the workers, started by `ray start`, got the tracking URI.
    result = ray.run(
        VENV_BIN / "mlflow-pipeline",
        *SWEEP,
        "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={cluster.address}",
        f"tracking.root={ray.root / 'embedded'}",
    )
    assert_ok(result)
    joblib = Store(tmp_path_factory.mktemp("joblib-sweep"))
    assert_ok(joblib.pipeline(*SWEEP, *JOBLIB))
    return Sweeps(ray=ray, joblib=joblib, ray_log=result.stderr[-4000:])


def test_ray_sweep_has_the_outcome_of_the_joblib_sweep(sweeps: Sweeps) -> None:
    ray, joblib = _outcome(sweeps.ray), _outcome(sweeps.joblib)
    assert len(ray["jobs"]) == 2, (ray["jobs"], sweeps.ray_log)
    assert set(ray["jobs"]) == set(joblib["jobs"])
    assert ray["roles"] == joblib["roles"]
    assert ray["metrics"] == pytest.approx(joblib["metrics"], rel=1e-9)
    assert ray["registry"] == joblib["registry"]
    assert ray["champion"] == joblib["champion"]
    assert ray["champion"] is not None
    assert not (sweeps.ray.root / "embedded" / "mlflow.db").exists()


def test_ray_sweep_jobs_ran_in_the_clusters_workers(cluster: RayCluster, sweeps: Sweeps) -> None:
    [sweep] = sweeps.ray.runs_of_kind("sweep")
    driver_pid = sweep.data.tags["pipeline.pid"]
    # The CLI was the cluster's driver; each job ran in a worker of the cluster and logged there.
    assert list(cluster.logs.glob(f"python-core-driver-*_{driver_pid}.log")), driver_pid
    jobs = _jobs(sweeps.ray, sweep)
    for job in jobs:
        pid = job.data.tags["pipeline.pid"]
        assert pid != driver_pid
        [worker_log] = cluster.logs.glob(f"worker-*-{pid}.out")
        assert job.info.run_id in worker_log.read_text("utf-8")
    # Workers run where the cluster was started: Hydra's job folders (each with the job's log;
    # no .hydra/ copy of the overrides, which may hold secrets) are there.
    logs = [p.read_text("utf-8") for p in cluster.workdir.glob("multirun/*/*/*/*.log")]
    for job in jobs:
        assert any(job.info.run_id in text for text in logs), job.info.run_id


def test_a_job_failing_on_the_cluster_fails_the_sweep_but_not_the_other_job(
    cluster: RayCluster, tmp_path: Path
) -> None:
    store = ClusterStore(tmp_path, extra_env=LOOPBACK_ONLY)
    # C must be positive: the second job fails in train, inside a Ray worker.
    result = store.pipeline(
        "-m",
        "model=logistic_regression",
        "model.C=0.1,-1.0",
        "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={cluster.address}",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "1 sweep job(s) failed" in result.stderr
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FAILED"
    status = {_job_key(job): job.info.status for job in _jobs(store, sweep)}
    assert status == {
        "model.C=-1.0 model=logistic_regression": "FAILED",
        "model.C=0.1 model=logistic_regression": "FINISHED",
    }
    assert [r.info.run_name for r in store.runs() if r.info.status == "RUNNING"] == []


def test_the_cluster_listens_on_loopback_only(cluster: RayCluster) -> None:
    listening = {
        conn.laddr.ip
        for process in cluster.processes()
        for conn in _connections(process)
        if conn.status == psutil.CONN_LISTEN
    }
    assert listening, "no Ray process listens"
    assert listening <= {HOST, f"::ffff:{HOST}"}, listening


def test_status_reports_the_running_cluster(cluster: RayCluster) -> None:
    again = cluster.script("start")
    assert_ok(again)
    assert f"already running: {cluster.address}" in again.stdout
    status = cluster.script("status")
    assert_ok(status)
    assert "1 node_" in status.stdout or "Active:" in status.stdout, status.stdout
    env = (cluster.root / "env").read_text()
    assert f"RAY_ADDRESS={cluster.address}" in env
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in env


def _connections(process: psutil.Process) -> list:
    try:
        return process.net_connections(kind="inet")
    except psutil.NoSuchProcess:
        return []


def _jobs(store: Store, sweep: Run) -> list[Run]:
    """The sweep's job pipeline runs (not its shared-stages or register runs, if any)."""
    return [
        run
        for run in store.children(sweep.info.run_id)
        if run.data.tags.get("pipeline.kind") == "pipeline"
        and run.data.tags.get("pipeline.sweep.role", "job") == "job"
    ]


def _job_key(run: Run) -> str:
    """A job's overrides without the store-specific ones (tracking.*), in a stable order."""
    overrides = shlex.split(run.data.tags.get("pipeline.overrides", ""))
    return " ".join(sorted(o for o in overrides if not o.startswith("tracking.")))


def _outcome(store: Store) -> dict:
    """What a sweep left in ``store``, free of run ids, timings and paths: one FINISHED sweep
    run, every pipeline run FINISHED under it, each job's evaluate metrics, and the registry."""
    [sweep] = store.runs_of_kind("sweep")
    assert sweep.info.status == "FINISHED"
    pipelines = store.runs_of_kind("pipeline")
    assert {p.data.tags["mlflow.parentRunId"] for p in pipelines} == {sweep.info.run_id}
    assert {p.info.status for p in pipelines} == {"FINISHED"}
    found = _jobs(store, sweep)
    jobs = {_job_key(job): job for job in found}
    metrics = {}
    for key, job in jobs.items():
        evaluate = store.stage_runs(job.info.run_id)["evaluate"]
        holder = evaluate.data.tags.get("pipeline.cache.source_run", evaluate.info.run_id)
        logged = store.client.get_run(holder).data.metrics
        metrics.update({(key, m): logged[m] for m in CLASSIFICATION_METRICS})
    registry = []
    champion = None
    for version in store.versions(MODEL_NAME):
        # The version's model was trained in one of the jobs: name it by that job's config.
        train = store.client.get_run(version.run_id)
        job = store.client.get_run(train.data.tags["pipeline.run_id"])
        entry = (
            _job_key(job),
            version.tags.get("promotion.decision"),
            version.tags.get("promotion.challenger_score"),
        )
        registry.append(entry)
        if store.alias(MODEL_NAME, "champion") == str(version.version):
            champion = entry
    roles = sorted(p.data.tags.get("pipeline.sweep.role", "job") for p in pipelines)
    return {
        "jobs": sorted(_job_key(job) for job in found),  # a job twice shows as twice
        "roles": roles,
        "metrics": metrics,
        "registry": sorted(registry, key=str),
        "champion": champion,
    }
