"""Tracking URI resolution, experiment set-up, code version, and every tag name in one place."""

from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import mlflow
import psutil
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from mlflow_pipeline.config import PROJECT_ROOT, require_extra
from mlflow_pipeline.errors import StoreError
from mlflow_pipeline.interrupt import interrupted_by, requested
from mlflow_pipeline.redaction import redact_url
from mlflow_pipeline.store.artifacts import remove_partial_frames
from mlflow_pipeline.tags import Env, MLflow, Runs

log = logging.getLogger(__name__)
T = TypeVar("T")
# Messages of store errors worth retrying: the store briefly locked or busy. HTTP errors (a
# refused connection, a timeout, 429/503) are not among them: MLflow's HTTP client retries those
# itself (HTTP_DEFAULTS), and retrying its retries multiplied a 4-minute wait into 20.
TRANSIENT_MARKERS = (
    "database is locked",
    "database table is locked",
    "connection reset",
    "temporarily unavailable",
    "server closed the connection",
)


# MLflow's HTTP retries when the user has not set them: a server that is down fails in about
# 3 s, one that hangs in about a minute (MLflow's defaults, 7 retries with backoff 2 and a 120 s
# timeout, take ~4 minutes to report a refused connection).
HTTP_DEFAULTS = {
    Env.HTTP_MAX_RETRIES: "2",
    Env.HTTP_BACKOFF_FACTOR: "1",
    Env.HTTP_BACKOFF_JITTER: "0.5",
    Env.HTTP_TIMEOUT: "20",
}
# A tracking server or database must accept a TCP connection within this many seconds.
REACH_TIMEOUT_S = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
# Store faults in plain words: (markers searched in the error chain, lower case; the cause).
# The first match wins; {uri} is the store (its password redacted).
STORE_FAULTS = (
    (
        ("readonly database", "read-only file system", "[errno 30]"),
        "the tracking store {uri} is read-only",
    ),
    (
        ("database or disk is full", "no space left on device", "[errno 28]"),
        "no space left on the device holding the tracking store {uri}",
    ),
    (
        ("database is locked", "database table is locked"),
        "the tracking store {uri} is locked by another process (database is locked)",
    ),
    (
        ("connection refused", "failed to establish a new connection"),
        "cannot reach the tracking server at {uri}: connection refused",
    ),
    (
        ("name or service not known", "temporary failure in name resolution", "nodename nor"),
        "cannot reach the tracking server at {uri}: its host name does not resolve",
    ),
    (
        ("read timed out", "timed out"),
        "the tracking server at {uri} did not answer in time",
    ),
    (
        ("error code 401",),
        "the tracking server at {uri} refused the request: not authenticated (401); set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the dev stack writes them to "
        ".stack/env)",
    ),
    (
        ("unable to open database file",),
        "cannot open the tracking store {uri}: its directory is missing or not writable",
    ),
)


@dataclass(frozen=True)
class Tracking:
    uri: str
    # Where new experiments keep artifacts; None lets the tracking server decide.
    artifact_root: str | None


def resolve_tracking(cfg: DictConfig) -> Tracking:
    """The absolute tracking URI (and artifact root for the embedded store) for ``cfg.tracking``.

    Order: ``tracking.uri``, then ``$MLFLOW_TRACKING_URI``, then the embedded SQLite store at
    ``<root>/mlflow.db``. A SQLite store's artifacts go to ``mlruns/`` beside its database.
    Relative SQLite paths are made absolute so Hydra's output directories and ``mlflow run``
    never scatter runs.
    """
    root = Path(cfg.tracking.root or PROJECT_ROOT).resolve()
    uri = cfg.tracking.uri or os.environ.get(Env.TRACKING_URI)
    if not uri:
        return Tracking(uri=f"sqlite:///{root / 'mlflow.db'}", artifact_root=str(root / "mlruns"))
    uri = absolute_sqlite_uri(uri)
    if uri.startswith("postgresql"):
        require_extra("psycopg2", "server", f"the PostgreSQL tracking store {uri.split('@')[-1]}")
    artifact_root = None
    if uri.startswith(SQLITE_PREFIX):
        # Beside the database they belong to: runs of unrelated stores never share a folder.
        database = Path(uri[len(SQLITE_PREFIX) :].split("?", 1)[0])
        artifact_root = str(database.parent / "mlruns")
    return Tracking(uri=uri, artifact_root=artifact_root)


def is_other_default_store(uri: str | None, root: Path) -> bool:
    """Is ``uri`` MLflow's default local store of another directory than the project ``root``
    (``sqlite:///<dir>/mlflow.db``)? That is what ``mlflow run <root>`` started from elsewhere
    hands the project's command; the project keeps its runs in its own store instead."""
    prefix = "sqlite:///"
    if not uri or not uri.startswith(prefix):
        return False
    path = Path(uri[len(prefix) :])
    return path.name == "mlflow.db" and path.resolve().parent != root.resolve()


def absolute_sqlite_uri(uri: str) -> str:
    """``sqlite:///rel.db`` -> ``sqlite:////abs/rel.db``; other URIs unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def activate(tracking: Tracking) -> Tracking:
    """Point this process, and every process it starts, at ``tracking``, once the store is
    known to be usable: a server (or database server) accepts a connection, a brand-new
    SQLite store is created and migrated by one process at a time (``prepare_sqlite``).

    An http(s) URI's ``user:password@`` moves to MLflow's credential variables, so the URI
    MLflow prints and we log holds no password. Returns the tracking as activated.
    Raises StoreError naming the store and the cause.
    """
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = _credentials_to_environment(tracking.uri)
    tracking = Tracking(uri=uri, artifact_root=tracking.artifact_root)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _end_interrupted_runs_at_exit()
    os.environ[Env.TRACKING_URI] = uri
    # A progress bar per artifact read floods the log of every stage that reads one.
    os.environ.setdefault(Env.ARTIFACTS_PROGRESS_BAR, "false")
    if uri.startswith(SQLITE_PREFIX):
        prepare_sqlite(uri)
    return tracking


SQLITE_PREFIX = "sqlite:///"


def _credentials_to_environment(uri: str) -> str:
    """``http(s)://user:password@host`` -> ``http(s)://host``, the user and password set as
    MLFLOW_TRACKING_USERNAME/PASSWORD (MLflow sends them as basic auth)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri
    if parts.username:
        os.environ[Env.TRACKING_USERNAME] = unquote(parts.username)
    if parts.password:
        os.environ[Env.TRACKING_PASSWORD] = unquote(parts.password)
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def check_reachable(uri: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Raises StoreError when the server of a network store (http(s), PostgreSQL, MySQL, SQL
    Server) does not accept a TCP connection: one clear line in seconds, instead of MLflow's
    and SQLAlchemy's retries. Skipped when a proxy stands between us and the server."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return
    if scheme in ("http", "https") and urllib.request.getproxies().get(scheme):
        if not urllib.request.proxy_bypass(parts.hostname):
            return
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        return  # MLflow reports a malformed URI itself
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        reason = _reach_failure(exc, timeout_s)
        raise StoreError(
            f"cannot reach the tracking server at {redact_url(uri)}: {reason}"
        ) from exc


def _reach_failure(exc: OSError, timeout_s: float) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return "its host name does not resolve"
    return exc.strerror or str(exc)


def prepare_sqlite(uri: str) -> None:
    """Open the SQLite store at ``uri``, creating and migrating it if it is new, with an
    exclusive lock on ``<db>.lock`` next to it: two processes starting together on a store that
    does not exist yet would both create its tables and one would fail in the migration.
    Later processes take the lock only for as long as opening takes.
    Raises StoreError when the store's directory cannot be created.
    """
    path = Path(uri[len(SQLITE_PREFIX) :].split("?", 1)[0])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"cannot open the tracking store {redact_url(uri)}: cannot create its directory "
            f"{path.parent} ({exc.strerror})"
        ) from exc
    try:
        lock = open(path.with_name(path.name + ".lock"), "a")  # held until opened
    except OSError:  # a read-only directory: nobody can create the store there either
        lock = None
    try:
        if lock is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        if lock is not None and not (path.exists() and path.stat().st_size):
            _copy_schema_template(path)
        MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates and migrates the tables
    except Exception as exc:
        cause = describe_store_fault(exc, uri)
        if cause is None:
            raise
        raise StoreError(cause) from exc
    finally:
        if lock is not None:
            lock.close()  # releases the lock


def schema_template() -> Path:
    """Where an empty, migrated store of this MLflow version is kept for new stores to copy:
    running MLflow's ~100 migrations costs seconds on every new store."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "mlflow_pipeline" / f"sqlite-schema-mlflow-{mlflow.__version__}.db"


def _copy_schema_template(path: Path) -> None:
    """Put a copy of the schema template at ``path`` (a new store), making the template first
    when this machine has none. Best effort: on any failure MLflow migrates ``path`` itself."""
    template = schema_template()
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            tmp = template.with_name(f"{template.name}.{os.getpid()}.tmp")
            tmp.unlink(missing_ok=True)
            MlflowClient(tracking_uri=f"{SQLITE_PREFIX}{tmp}")  # creates and migrates it
            with closing(sqlite3.connect(tmp)) as con, con:
                # Schema only: MLflow makes the default experiment when it opens the copy, with
                # the artifact location of where that happens.
                con.execute("DELETE FROM experiment_tags")
                con.execute("DELETE FROM experiments")
            tmp.replace(template)
        copy = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(template, copy)
        copy.replace(path)
    except Exception as exc:  # a read-only home, an old template: the slow way still works
        log.debug("no schema template for %s: %s", path, exc)


def describe_store_fault(error: BaseException, uri: str | None = None) -> str | None:
    """``error`` as one plain line naming the store (``uri``, default: the active tracking
    URI, password redacted) and the cause, when it is a store fault (see STORE_FAULTS): a
    server that is down, a read-only store, a full disk, a locked database, a missing
    directory. None for anything else."""
    if isinstance(error, StoreError):
        return str(error)
    text = " ".join(str(e) for e in _chain(error)).lower()
    for markers, cause in STORE_FAULTS:
        if any(marker in text for marker in markers):
            return cause.format(uri=redact_url(uri or mlflow.get_tracking_uri()))
    return None


def ensure_experiment(client: MlflowClient, name: str, tracking: Tracking) -> str:
    """The id of experiment ``name``, created (with a fixed artifact location) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=experiment_location(tracking, name))
    except mlflow.exceptions.MlflowException:
        # Another process created it between our look-up and create.
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def experiment_location(tracking: Tracking, name: str) -> str | None:
    """Where a new experiment ``name`` keeps its artifacts: under the embedded store's artifact
    root, fixed (not the working directory of whoever creates it); None for a server."""
    if not tracking.artifact_root:
        return None
    return Path(tracking.artifact_root, _slug(name)).as_uri()


def end_active_run(failure: BaseException | None = None) -> None:
    """End the active run: FINISHED, KILLED after an interrupt, FAILED after any other error."""
    if failure is None:
        mlflow.end_run()
    elif interrupted_by(failure):
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))


@functools.cache
def _end_interrupted_runs_at_exit() -> None:
    """After a Ctrl-C, a run still active as the process exits ends KILLED: MLflow's own exit
    handler, which runs after this one, would end it FINISHED. A second Ctrl-C in the runner's
    clean-up, before it ended the pipeline run, had left that run to it."""

    def end_interrupted_runs() -> None:
        while requested() and mlflow.active_run() is not None:
            with suppress(Exception):  # the store may be what is gone; the run is off the stack
                mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))

    atexit.register(end_interrupted_runs)


def end_runs_down_to(run_id: str, failure: BaseException) -> None:
    """End the active runs down to and including ``run_id``, each as ``end_active_run`` would.
    An interrupt that lands inside ``mlflow.start_run``, after the stage's run is made active
    and before the stage's code holds it, leaves that run above ``run_id``: ending only the top
    one ended the stage's run, and MLflow's exit handler then ended ``run_id`` FINISHED."""
    while (active := mlflow.active_run()) is not None:
        end_active_run(failure)
        if active.info.run_id == run_id:
            return


def record_error(run_id: str, error: BaseException) -> None:
    """Best effort: tag ``run_id`` with the error's message (the store may be what failed)."""
    try:
        message = redact_url(str(error))[:5000] or type(error).__name__
        MlflowClient().set_tag(run_id, Runs.ERROR, message)
    except Exception:  # the original error matters more than this tag
        pass


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


# Longest folder name an experiment's artifacts get (file systems stop at 255 bytes).
MAX_SLUG_CHARS = 100


def _slug(name: str) -> str:
    """``name`` as one folder name that stays where it is put: letters, digits, ``_``, ``.``
    and ``-`` only (no separator), never starting with a dot (``..``, ``.hidden``), never empty,
    at most MAX_SLUG_CHARS (a longer name ends with a short digest of itself). Two names may
    share a folder (``a/b``, ``a_b``): their runs' folders are still their own."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    slug = re.sub(r"^\.+", lambda m: "_" * len(m[0]), slug) or "experiment"
    if len(slug) <= MAX_SLUG_CHARS:
        return slug
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{slug[: MAX_SLUG_CHARS - 9]}-{digest}"


@functools.cache
def code_version() -> dict[str, str]:
    """Git commit and dirty flag of the project, when it is a git checkout (else empty)."""
    try:
        commit = _git("rev-parse", "HEAD")
        status = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        Runs.GIT_COMMIT: commit,
        MLflow.GIT_COMMIT: commit,
        Runs.GIT_DIRTY: str(bool(status)).lower(),
    }


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run (see reap_dead_runs)."""
    me = psutil.Process()
    return {Runs.HOST: socket.gethostname(), Runs.PID: str(me.pid), Runs.PID_STARTED: _started(me)}


def _started(process: psutil.Process) -> str:
    return f"{process.create_time():.2f}"


def _alive(pid: str, started: str) -> bool:
    try:
        process = psutil.Process(int(pid))
        return _started(process) == started and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def _running_here(client: MlflowClient, experiment_id: str) -> list[Run]:
    """The RUNNING runs of ``experiment_id`` owned by a process of this host."""
    return client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{Runs.HOST}` = '{socket.gethostname()}'",
        max_results=1000,
    )


def wait_for_owning_children(client: MlflowClient, experiment_id: str, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for the child processes of this one that own RUNNING runs of
    ``experiment_id`` (a joblib sweep's workers) to exit."""
    children = {child.pid: child for child in psutil.Process().children(recursive=True)}
    owners = {
        children[int(pid)]
        for run in _running_here(client, experiment_id)
        if (pid := run.data.tags.get(Runs.PID, "")).isdigit() and int(pid) in children
    }
    psutil.wait_procs(list(owners), timeout=timeout_s)


def reap_dead_runs(
    client: MlflowClient,
    experiment_id: str,
    status: str = "FAILED",
    by: str = "a later pipeline run",
) -> list[str]:
    """Mark ``status`` every RUNNING run of ``experiment_id`` owned by a process of this host
    that no longer exists (killed with SIGKILL, crashed, machine rebooted), and remove the
    frame it was writing when it died (``artifacts.remove_partial_frames``). Returns their
    ids. ``by``: what marks them, for the message.

    Runs owned by live processes, by other hosts, or without owner tags are left alone.
    """
    host = socket.gethostname()
    reaped = []
    for run in _running_here(client, experiment_id):
        tags = run.data.tags
        if _alive(tags.get(Runs.PID, ""), tags.get(Runs.PID_STARTED, "")):
            continue
        message = (
            f"process {tags.get(Runs.PID)} on {host} ended while this run was RUNNING "
            f"(killed or crashed); marked {status} by {by}"
        )
        client.set_tag(run.info.run_id, Runs.ERROR, message)
        client.set_terminated(run.info.run_id, status)
        reaped.append(run.info.run_id)
        try:  # best effort: the reaping goes on whatever the artifact store says
            partial = remove_partial_frames(run.info.artifact_uri, tags.get(Runs.PID, ""))
        except Exception as exc:
            log.warning("run %s: its half-written frames stay: %s", run.info.run_id, exc)
            partial = []
        if partial:
            log.info(
                "removed what run %s was writing when its process died: %s",
                run.info.run_id,
                ", ".join(p.name for p in partial),
            )
    if reaped:
        log.info("marked %d abandoned run(s) %s: %s", len(reaped), status, ", ".join(reaped))
    return reaped


def end_own_runs(client: MlflowClient, experiment_id: str, status: str = "KILLED") -> list[str]:
    """Mark ``status`` every run of ``experiment_id`` that this process owns and left RUNNING
    (an interrupt can land between creating a run and making it active). Returns their ids."""
    me = owner_tags()
    runs = client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{Runs.HOST}` = '{me[Runs.HOST]}' "
        f"and tags.`{Runs.PID}` = '{me[Runs.PID]}'",
        max_results=1000,
    )
    ended = []
    for run in runs:
        if run.data.tags.get(Runs.PID_STARTED) == me[Runs.PID_STARTED]:
            client.set_terminated(run.info.run_id, status)
            ended.append(run.info.run_id)
    return ended


def is_transient(error: BaseException) -> bool:
    """Is ``error`` the store being briefly locked, busy or unreachable?"""
    text = " ".join(str(e) for e in _chain(error)).lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


def _chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def retry_transient(
    call: Callable[..., T],
    *args: object,
    attempts: int = 5,
    first_delay_s: float = 0.5,
    what: str = "store",
) -> T:
    """``call(*args)``, retried with exponential backoff (0.5, 1, 2, 4 s) while it fails with a
    transient store error; any other error, or the last attempt's, is raised at once."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return call(*args)
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning(
                "%s: transient error (attempt %d/%d), retrying in %.1f s: %s",
                what,
                attempt,
                attempts,
                delay,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
