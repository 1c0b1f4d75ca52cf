#!/usr/bin/env python3
"""A shared MLflow tracking server on this machine: PostgreSQL (runs, registry), moto (S3
artifacts) and `mlflow server` in front of both, all on 127.0.0.1, all state in one folder,
every one asking for a password or key generated at the first start.

    scripts/stack.py start [DIR]    # DIR defaults to <repo>/.stack; last line: the tracking URI
    scripts/stack.py status [DIR]   # exit 0 all running, 1 partly, 3 not running
    scripts/stack.py stop [DIR]     # keeps DIR: the next start serves the same runs and artifacts

`rm -rf DIR` after `stop` forgets everything.

Ports come from STACK_MLFLOW_PORT (5055), STACK_S3_PORT (5056) and STACK_PG_PORT (5057);
0 picks a free port. After `start`, DIR/env (mode 0600) holds MLFLOW_TRACKING_URI,
MLFLOW_PIPELINE_SERVER_URI (what `tracking=server` reads), MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD for `set -a; . DIR/env; set +a`; DIR/s3.env the S3 key, for reading
the bucket directly. DIR/secrets.json (0600) keeps every generated secret across restarts:
PostgreSQL's superuser `postgres` and role `mlflow` (not a superuser; owns database `mlflow`),
the S3 key, and the password of MLflow's `admin` (the account DIR/env gives clients).
Standard library only, so any python3 can run it; the servers come from the project's venv.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO / ".stack"
PG_BIN = Path(os.environ.get("STACK_PG_BIN", "/usr/lib/postgresql/15/bin"))
HOST = "127.0.0.1"
DEFAULT_PORTS = {"mlflow": 5055, "s3": 5056, "pg": 5057}
PORT_ENV = {"mlflow": "STACK_MLFLOW_PORT", "s3": "STACK_S3_PORT", "pg": "STACK_PG_PORT"}
DATABASE = "mlflow"
DB_ROLE = "mlflow"
DB_SUPERUSER = "postgres"
BUCKET = "mlflow"
ARTIFACTS = f"s3://{BUCKET}/artifacts"
REGION = "us-east-1"
# The account clients use. An admin: MLflow 3.17 answers a non-admin's read of a registered
# model that does not exist yet with 403 (not 404), and the pipeline's first run reads one.
MLFLOW_ADMIN = "admin"
# moto keeps objects in memory. scripts/s3_server.py records every request to this file, and
# the next start replays the writes, so a stop/start keeps the artifacts the runs point at.
RECORDING = "s3-recording.jsonl"
S3_SERVER = Path(__file__).resolve().with_name("s3_server.py")
# Only TCP on loopback, a password for every role: no `trust`, no Unix socket.
PG_HBA = f"""# scripts/stack.py: every connection needs its role's password
# TYPE  DATABASE     USER            ADDRESS        METHOD
host    {DATABASE:12} {DB_ROLE:15} {HOST}/32  scram-sha-256
host    all          {DB_SUPERUSER:15} {HOST}/32  scram-sha-256
"""
STARTUP_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
# Never send loopback traffic through a proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(Exception):
    """Something the user can fix; printed as one message, exit code 1."""


@dataclass
class Paths:
    root: Path

    @property
    def state(self) -> Path:
        return self.root / "stack.json"

    @property
    def env(self) -> Path:
        return self.root / "env"

    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def recording(self) -> Path:
        return self.root / RECORDING

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def s3_env(self) -> Path:
        return self.root / "s3.env"

    @property
    def pgpass(self) -> Path:
        """The `mlflow` role's password for libpq (PGPASSFILE): never in a URI or argv."""
        return self.root / "pgpass"

    @property
    def auth_config(self) -> Path:
        return self.root / "basic_auth.ini"


# ---- secrets (generated once, kept in files only the owner can read) ------------------------


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600), whatever was there."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _token() -> str:
    return secrets.token_urlsafe(24)  # 192 bits; safe in URIs, env files and pgpass


def _new_secrets() -> dict[str, str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # what AWS access key ids are made of
    return {
        "postgres_superuser_password": _token(),
        "postgres_mlflow_password": _token(),
        "s3_access_key_id": "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
        "s3_secret_access_key": secrets.token_urlsafe(30),
        "mlflow_admin_password": _token(),
        # Signs the UI's CSRF tokens (the basic-auth app refuses to start without one).
        "mlflow_flask_secret_key": _token(),
    }


def _load_secrets(paths: Paths) -> dict[str, str]:
    """The stack's secrets: generated with a new cluster, read back at every later start."""
    if paths.secrets.exists():
        found = json.loads(paths.secrets.read_text())
        # A secret this version needs and an earlier one did not generate: add it.
        if missing := _new_secrets().keys() - found.keys():
            found |= {k: v for k, v in _new_secrets().items() if k in missing}
        _write_private(paths.secrets, json.dumps(found, indent=2) + "\n")
        return found
    if (paths.pgdata / "PG_VERSION").exists():
        raise StackError(
            f"{paths.root} was made by an older stack.py that trusted every local connection "
            f"(no {paths.secrets.name}); its runs cannot be secured in place. Stop it, then "
            f"`rm -rf {paths.root}` (forgets its runs and artifacts) and start again"
        )
    found = _new_secrets()
    _write_private(paths.secrets, json.dumps(found, indent=2) + "\n")
    return found


def _scram_verifier(password: str, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password``: what CREATE ROLE stores, so the
    password itself never reaches the server (its logs, its statement statistics)."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# ---- processes (Linux /proc; pids are checked against their start time, never reused) ------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0]), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _start_ticks(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields and fields[0] != "Z" else None


def _alive(pid: int | None, started: str | None) -> bool:
    return bool(pid) and _start_ticks(pid) is not None and _start_ticks(pid) == started


def _all_stats() -> Iterator[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] != "Z":
            yield int(entry.name), fields


def _tree(pid: int) -> list[int]:
    """``pid`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for child, fields in _all_stats():
        children.setdefault(int(fields[1]), []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (a server we started with its own session)."""
    return [pid for pid, fields in _all_stats() if int(fields[3]) == sid]


def _rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> dict:
    """Start a server in its own session (it outlives this script); its pid and start time."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )
    return {"pid": proc.pid, "started": _start_ticks(proc.pid)}


def _terminate(entry: dict | None) -> None:
    """SIGTERM the session of a server we started, then SIGKILL what is left after a while."""
    if not entry:
        return
    sid = entry["pid"]
    # Only our session: its leader must be the process we started (or gone, leaving children).
    if _start_ticks(sid) is not None and not _alive(sid, entry.get("started")):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = _session_members(sid)
        for pid in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _session_members(sid):
            return
    raise StackError(f"could not stop session {sid}: {_session_members(sid)} still running")


# ---- ports and readiness ---------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the servers do: connections of a stopped server in TIME_WAIT do not block the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _choose_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    for name, default in DEFAULT_PORTS.items():
        raw = os.environ.get(PORT_ENV[name], str(default))
        try:
            port = int(raw)
        except ValueError:
            raise StackError(f"{PORT_ENV[name]}={raw!r} is not a port number") from None
        port = port or _free_port()
        if port in ports.values() or not _port_free(port):
            raise StackError(
                f"port {HOST}:{port} ({name}) is in use; set {PORT_ENV[name]} to another port, "
                "or 0 for any free one"
            )
        ports[name] = port
    return ports


def _http(
    method: str,
    url: str,
    timeout: float = 5,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    if body is None and method in ("PUT", "POST"):
        body = b""
    request = urllib.request.Request(url, method=method, data=body, headers=headers or {})
    try:
        with HTTP.open(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _wait_http(url: str, what: str, entry: dict, log: Path, ready: int = 200) -> None:
    """Wait until ``url`` answers with status ``ready``."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if _http("GET", url, timeout=2)[0] == ready:
                return
        except OSError:
            pass
        if not _alive(entry["pid"], entry["started"]):
            raise StackError(f"{what} exited during start-up; see {log}:\n{_tail(log)}")
        time.sleep(0.25)
    raise StackError(f"{what} not ready at {url} after {STARTUP_TIMEOUT_S} s; see {log}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- PostgreSQL (a private cluster; postgres refuses to run as root) -----------------------


def _pg_os_user() -> str | None:
    """The unprivileged user that runs PostgreSQL when we are root (None: ourselves)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("STACK_PG_OS_USER", "postgres")
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise StackError(
            f"running as root, and PostgreSQL refuses to run as root: it runs as user {name!r}, "
            "which does not exist. Set STACK_PG_OS_USER to an unprivileged user "
            "(`apt-get install postgresql` creates 'postgres'), or run as a normal user."
        ) from None
    if shutil.which("runuser") is None:
        raise StackError("running as root needs `runuser` (util-linux) to start PostgreSQL")
    return name


def _as_pg_user(args: list[str]) -> list[str]:
    user = _pg_os_user()
    return ["runuser", "-u", user, "--", *args] if user else args


def _pg(tool: str) -> str:
    path = PG_BIN / tool
    if not os.access(path, os.X_OK):
        raise StackError(
            f"PostgreSQL 15 is not installed ({path} not found): `apt-get install postgresql` "
            "(or set STACK_PG_BIN to the folder holding initdb and pg_ctl)"
        )
    return str(path)


def _run(
    args: list[str], what: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> str:
    result = subprocess.run(args, input=stdin, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise StackError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def _hand_to_pg_user(path: Path) -> None:
    user = _pg_os_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _init_cluster(paths: Paths, found: dict[str, str]) -> None:
    """A new cluster whose superuser `postgres` has a password and whose pg_hba asks every
    connection for one."""
    initdb = _pg("initdb")
    paths.pgdata.mkdir(mode=0o700)
    _hand_to_pg_user(paths.pgdata)
    user = _pg_os_user()
    if user and subprocess.run(_as_pg_user(["test", "-w", str(paths.pgdata)])).returncode:
        shutil.rmtree(paths.pgdata)
        raise StackError(
            f"user {user!r} (who runs PostgreSQL, since we are root) cannot reach "
            f"{paths.pgdata}: a parent folder is private. Choose a DIR every user can traverse "
            "(e.g. under /tmp or the repo)"
        )
    # initdb reads the superuser's password from a file (never argv); as root, it runs as the
    # PostgreSQL user, who must be able to read it.
    pwfile = paths.root / "initdb-password"
    _write_private(pwfile, found["postgres_superuser_password"] + "\n")
    _hand_to_pg_user(pwfile)
    try:
        _run(
            _as_pg_user(
                [initdb, "-D", str(paths.pgdata), "-U", DB_SUPERUSER, f"--pwfile={pwfile}"]
                + ["--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-instructions"]
            ),
            "initdb",
        )
    finally:
        pwfile.unlink(missing_ok=True)
    (paths.pgdata / "pg_hba.conf").write_text(PG_HBA)
    # Loopback TCP only: no Unix socket (nothing outside DIR, no socket-path length limit).
    with (paths.pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# scripts/stack.py\n"
            f"listen_addresses = '{HOST}'\n"
            "unix_socket_directories = ''\n"
            "shared_buffers = '64MB'\n"
            "max_connections = 50\n"
            "password_encryption = 'scram-sha-256'\n"
        )


def _start_postgres(paths: Paths, port: int) -> None:
    pg_ctl = _pg("pg_ctl")
    log = paths.logs / "postgres.log"
    log.touch()
    _hand_to_pg_user(log)
    _run(
        _as_pg_user(
            [pg_ctl, "start", "-w", "-t", "60", "-D", str(paths.pgdata), "-l", str(log)]
            + ["-o", f"-p {port}"]
        ),
        f"pg_ctl start (see {log})",
    )


def _postgres_pid(paths: Paths) -> int | None:
    try:
        pid = int((paths.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _start_ticks(pid) is not None else None


def _stop_postgres(paths: Paths) -> None:
    if _postgres_pid(paths) is None:
        return
    _run(
        _as_pg_user([_pg("pg_ctl"), "stop", "-D", str(paths.pgdata), "-m", "fast", "-w"]),
        "pg_ctl stop",
    )


def _ensure_database(port: int, found: dict[str, str]) -> None:
    """Role `mlflow` (a login with a password, no superuser, no CREATEDB/CREATEROLE) and the
    database it owns; created as the superuser, whose password goes in the environment."""
    env = {**_clean_env(), "PGPASSWORD": found["postgres_superuser_password"]}
    psql = [_pg("psql"), "-X", "-w", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port)]
    psql += ["-U", DB_SUPERUSER, "-d", "postgres", "-qtA"]
    exists = _run(
        psql,
        "psql (as the superuser)",
        env,
        f"SELECT count(*) FROM pg_roles WHERE rolname = '{DB_ROLE}';\n"
        f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}';\n",
    ).split()
    statements = []
    if exists[0] != "1":
        # The password's SCRAM verifier, on stdin: never the password, never argv.
        verifier = _scram_verifier(found["postgres_mlflow_password"])
        statements.append(
            f"CREATE ROLE {DB_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"PASSWORD '{verifier}';"
        )
    if exists[1] != "1":
        statements += [
            f"CREATE DATABASE {DATABASE} OWNER {DB_ROLE};",
            f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;",
            f"GRANT ALL ON DATABASE {DATABASE} TO {DB_ROLE};",
        ]
    if statements:
        _run(psql, "creating the mlflow role and database", env, "\n".join(statements) + "\n")


# ---- the stack -------------------------------------------------------------------------------

# The caller's variables that must not reach the servers: another store, another identity.
SCRUBBED_ENV = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGUSER",
    "PGHOST",
    "PGPORT",
    "PGDATABASE",
)


def _venv_bin() -> Path:
    """The folder holding the `python` (with moto) and `mlflow` to run: this Python's, else the
    repo's .venv (so a system python3 can run this script)."""
    for candidate in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (candidate / "mlflow").exists() and (candidate / "moto_server").exists():
            return candidate
    raise StackError(
        "no `mlflow` and `moto_server` found next to this Python or in .venv/bin: run "
        "`make setup` (it installs moto[server] and psycopg2-binary)"
    )


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["NO_PROXY"] = env["no_proxy"] = f"{HOST},localhost"
    return env


def _s3_env(found: dict[str, str], s3_port: int) -> dict[str, str]:
    """What boto3 (in `mlflow server`, or a user reading the bucket) needs to reach the bucket."""
    return {
        "AWS_ACCESS_KEY_ID": found["s3_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": found["s3_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
        "MLFLOW_S3_ENDPOINT_URL": f"http://{HOST}:{s3_port}",
        "AWS_ENDPOINT_URL_S3": f"http://{HOST}:{s3_port}",
    }


def _mlflow_env(paths: Paths, found: dict[str, str], s3_port: int) -> dict[str, str]:
    env = {**_clean_env(), **_s3_env(found, s3_port)}
    env["PGPASSFILE"] = str(paths.pgpass)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(paths.auth_config)
    # Read by the auth app only while its user database has no admin (the first start).
    env["MLFLOW_AUTH_ADMIN_PASSWORD"] = found["mlflow_admin_password"]
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = found["mlflow_flask_secret_key"]
    return env


def _write_auth_config(paths: Paths) -> None:
    """MLflow's basic-auth settings: users (password hashes) in a SQLite file in DIR."""
    users = paths.root / "basic_auth.db"
    if not users.exists():
        users.touch(mode=0o600)  # SQLite keeps the mode, and gives it to its journal
    _write_private(
        paths.auth_config,
        "[mlflow]\n"
        "# scripts/stack.py. The admin's password is not here: the first start hands it over\n"
        "# in MLFLOW_AUTH_ADMIN_PASSWORD; from then on it is a hash in database_uri.\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{users}\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        "# Check a password (scrypt, ~0.1 s of CPU) once a minute per user, not per request: a\n"
        "# pipeline sends hundreds. One worker, so a password change is seen at once.\n"
        "auth_cache_ttl_seconds = 60\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )


def _load(paths: Paths) -> dict | None:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return None


def _components(paths: Paths, state: dict | None) -> dict[str, int | None]:
    """Live pid per component (None when not running)."""
    state = state or {}
    live: dict[str, int | None] = {"postgres": _postgres_pid(paths)}
    for name in ("s3", "mlflow"):
        entry = state.get(name)
        live[name] = entry["pid"] if entry and _alive(entry["pid"], entry["started"]) else None
    return live


def start(paths: Paths) -> int:
    state = _load(paths)
    live = _components(paths, state)
    if all(live.values()) and state:
        print(f"already running (state and logs in {paths.root})")
        print(state["tracking_uri"])
        return 0
    if any(live.values()):
        running = ", ".join(name for name, pid in live.items() if pid)
        raise StackError(f"partly running ({running}); run `stop {paths.root}` first")

    t0 = time.monotonic()
    bin_dir = _venv_bin()
    _pg("pg_ctl")  # fail early, with the install hint
    ports = _choose_ports()
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(exist_ok=True)
    found = _load_secrets(paths)
    s3_url = f"http://{HOST}:{ports['s3']}"
    state = {"root": str(paths.root), "ports": ports, "started_at": time.time()}
    try:
        # moto starts (and replays its recording) while PostgreSQL initialises and migrates.
        s3_log = paths.logs / "s3.log"
        state["s3"] = _spawn(
            [str(bin_dir / "python"), str(S3_SERVER), HOST, str(ports["s3"]), BUCKET]
            + [str(paths.recording)],
            s3_log,
            {**_clean_env(), **_s3_env(found, ports["s3"])},
        )
        _save(paths, state)

        if not (paths.pgdata / "PG_VERSION").exists():
            _init_cluster(paths, found)
        _start_postgres(paths, ports["pg"])
        _ensure_database(ports["pg"], found)
        _write_private(
            paths.pgpass, f"{HOST}:*:{DATABASE}:{DB_ROLE}:{found['postgres_mlflow_password']}\n"
        )
        # No password in the URI: libpq reads it from PGPASSFILE.
        db_uri = f"postgresql+psycopg2://{DB_ROLE}@{HOST}:{ports['pg']}/{DATABASE}"
        # Create/upgrade the schema once, before any server process touches it (STACK-NOTES).
        db_env = {**_clean_env(), "PGPASSFILE": str(paths.pgpass)}
        _run([str(bin_dir / "mlflow"), "db", "upgrade", db_uri], "mlflow db upgrade", db_env)

        # Listening (after the replay) once an unsigned request is refused.
        _wait_http(f"{s3_url}/{BUCKET}", "S3 server", state["s3"], s3_log, ready=403)

        _write_auth_config(paths)
        mlflow_log = paths.logs / "mlflow.log"
        state["mlflow"] = _spawn(
            [str(bin_dir / "mlflow"), "server", "--app-name", "basic-auth"]
            + ["--backend-store-uri", db_uri, "--artifacts-destination", ARTIFACTS]
            + ["--host", HOST, "--port", str(ports["mlflow"]), "--workers", "1"],
            mlflow_log,
            _mlflow_env(paths, found, ports["s3"]),
        )
        _save(paths, state)
        tracking_uri = f"http://{HOST}:{ports['mlflow']}"
        _wait_http(f"{tracking_uri}/health", "mlflow server", state["mlflow"], mlflow_log)
    except BaseException:
        with contextlib.suppress(StackError):  # the first error is the one to see
            _stop_all(paths, state)
        raise

    state.update(
        tracking_uri=tracking_uri,
        backend_store_uri=db_uri,
        s3_endpoint_url=s3_url,
        artifacts_destination=ARTIFACTS,
        startup_s=round(time.monotonic() - t0, 1),
    )
    _save(paths, state)
    # Clients need the server only: artifacts go through it (mlflow-artifacts:/).
    _write_private(
        paths.env,
        "# scripts/stack.py: the tracking server and its client account (secret: mode 0600)\n"
        f"MLFLOW_TRACKING_URI={tracking_uri}\nMLFLOW_PIPELINE_SERVER_URI={tracking_uri}\n"
        f"MLFLOW_TRACKING_USERNAME={MLFLOW_ADMIN}\n"
        f"MLFLOW_TRACKING_PASSWORD={found['mlflow_admin_password']}\n"
        "# Artifacts through the server, never by presigned S3 URLs (the S3 server refuses\n"
        "# them: moto cannot check their signature).\n"
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false\n"
        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false\n",
    )
    _write_private(
        paths.s3_env,
        "# scripts/stack.py: the S3 key, to read the bucket directly (secret: mode 0600)\n"
        + "".join(f"{k}={v}\n" for k, v in _s3_env(found, ports["s3"]).items()),
    )
    print(f"stack up in {state['startup_s']} s (state, logs and secrets in {paths.root})")
    print(f"  postgres  {db_uri} (password: {paths.pgpass})")
    print(f"  s3        {s3_url} bucket {BUCKET!r} (signed requests only; key: {paths.s3_env})")
    print(f"  mlflow    {tracking_uri} (basic auth; artifacts proxied to {ARTIFACTS})")
    print(f"  clients   set -a; . {paths.env}; set +a   (user {MLFLOW_ADMIN!r} and its password)")
    print(tracking_uri)
    return 0


def _save(paths: Paths, state: dict) -> None:
    paths.state.write_text(json.dumps(state, indent=2) + "\n")


def _stop_all(paths: Paths, state: dict | None) -> None:
    state = state or {}
    errors = []
    # The server first (it holds database connections), then its stores.
    for step in (
        lambda: _terminate(state.get("mlflow")),
        lambda: _terminate(state.get("s3")),
        lambda: _stop_postgres(paths),
    ):
        try:
            step()
        except StackError as exc:
            errors.append(str(exc))
    if errors:
        raise StackError("\n".join(errors))


def stop(paths: Paths) -> int:
    if not paths.root.exists():
        print(f"not running (no {paths.root})")
        return 0
    state = _load(paths)
    was = [name for name, pid in _components(paths, state).items() if pid]
    _stop_all(paths, state)
    # They name this start's ports; secrets.json keeps the secrets for the next start.
    paths.env.unlink(missing_ok=True)
    paths.s3_env.unlink(missing_ok=True)
    print(f"stopped {', '.join(was)}" if was else "not running")
    return 0


def status(paths: Paths) -> int:
    state = _load(paths) or {}
    live = _components(paths, state)
    ports = state.get("ports", {})
    port_of = {"postgres": ports.get("pg"), "s3": ports.get("s3"), "mlflow": ports.get("mlflow")}
    total = 0.0
    for name, pid in live.items():
        if pid is None:
            print(f"{name:9} not running")
            continue
        tree = _tree(pid)
        rss = _rss_mb(tree)
        total += rss
        where = f"{HOST}:{port_of[name]}"
        print(f"{name:9} pid {pid:<7} {where}  {len(tree)} process(es), {rss:.0f} MB")
    if all(live.values()):
        health = "unreachable"
        try:
            health = _http("GET", f"{state['tracking_uri']}/health", timeout=5)[1].strip()
        except (OSError, KeyError):
            pass
        print(f"tracking  {state.get('tracking_uri')} (health: {health}); {total:.0f} MB in all")
        return 0
    return 3 if not any(live.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description=__doc__.split("\n\n")[0].replace("\n", " ")
    )
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("dir", nargs="?", default=str(DEFAULT_DIR), help="state folder")
    args = parser.parse_args(argv)
    paths = Paths(Path(args.dir).resolve())
    try:
        return {"start": start, "stop": stop, "status": status}[args.command](paths)
    except StackError as exc:
        print(f"stack: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
