#!/usr/bin/env python3
"""A shared MLflow tracking server on this machine: PostgreSQL (runs, registry), moto_server
(S3 artifacts) and `mlflow server` in front of both, all on 127.0.0.1, all state in one folder.

    scripts/stack.py start [DIR]    # DIR defaults to <repo>/.stack; last line: the tracking URI
    scripts/stack.py status [DIR]   # exit 0 all running, 1 partly, 3 not running
    scripts/stack.py stop [DIR]     # keeps DIR: the next start serves the same runs and artifacts

`rm -rf DIR` after `stop` forgets everything.

Ports come from STACK_MLFLOW_PORT (5055), STACK_S3_PORT (5056) and STACK_PG_PORT (5057);
0 picks a free port. After `start`, DIR/env holds MLFLOW_TRACKING_URI and
MLFLOW_PIPELINE_SERVER_URI (what `tracking=server` reads) for `set -a; . DIR/env; set +a`.
Standard library only, so any python3 can run it; the servers come from the project's venv.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
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
BUCKET = "mlflow"
ARTIFACTS = f"s3://{BUCKET}/artifacts"
# moto_server keeps objects in memory. It records every request to this file, and the next
# start replays the writes, so a stop/start keeps the artifacts PostgreSQL's runs point at.
RECORDING = "s3-recording.jsonl"
# Dummy credentials: moto accepts any; clients of the tracking server need none at all.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "stack",
    "AWS_SECRET_ACCESS_KEY": "stack",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# The upload id of a multipart upload's parts and completion, in a raw query string.
UPLOAD_ID = re.compile(r"(^|&)uploadId=([^&]*)")
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


def _wait_http(url: str, what: str, entry: dict, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if _http("GET", url, timeout=2)[0] == 200:
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


def _run(args: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise StackError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result.stdout


def _hand_to_pg_user(path: Path) -> None:
    user = _pg_os_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _init_cluster(paths: Paths) -> None:
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
    _run(
        _as_pg_user(
            [initdb, "-D", str(paths.pgdata), "-U", DB_ROLE, "--auth=trust", "-E", "UTF8"]
            + ["--no-locale", "--no-instructions"]
        ),
        "initdb",
    )
    # Loopback TCP only: no Unix socket (nothing outside DIR, no socket-path length limit).
    with (paths.pgdata / "postgresql.conf").open("a") as conf:
        conf.write(
            "\n# scripts/stack.py\n"
            f"listen_addresses = '{HOST}'\n"
            "unix_socket_directories = ''\n"
            "shared_buffers = '64MB'\n"
            "max_connections = 50\n"
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


def _ensure_database(port: int) -> None:
    createdb = _pg("createdb")
    psql = _pg("psql")
    exists = _run(
        [psql, "-h", HOST, "-p", str(port), "-U", DB_ROLE, "-d", "postgres", "-tAc"]
        + [f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
        "psql",
    )
    if exists.strip() != "1":
        _run([createdb, "-h", HOST, "-p", str(port), "-U", DB_ROLE, DATABASE], "createdb")


# ---- the stack -------------------------------------------------------------------------------


def _venv_bin() -> Path:
    """The folder holding the `mlflow` and `moto_server` to run: this Python's, else the repo's
    .venv (so a system python3 can run this script)."""
    for candidate in (Path(sys.executable).parent, REPO / ".venv" / "bin"):
        if (candidate / "mlflow").exists() and (candidate / "moto_server").exists():
            return candidate
    raise StackError(
        "no `mlflow` and `moto_server` found next to this Python or in .venv/bin: run "
        "`make setup` (it installs moto[server] and psycopg2-binary)"
    )


def _server_env(s3_port: int) -> dict[str, str]:
    scrub = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AWS_PROFILE", "AWS_SESSION_TOKEN")
    env = {k: v for k, v in os.environ.items() if k not in scrub}
    env.update(S3_ENV)
    env["MLFLOW_S3_ENDPOINT_URL"] = f"http://{HOST}:{s3_port}"
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env["NO_PROXY"] = env["no_proxy"] = f"{HOST},localhost"
    return env


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
    env = _server_env(ports["s3"])
    state = {"root": str(paths.root), "ports": ports, "started_at": time.time()}
    try:
        # moto starts while PostgreSQL initialises and migrates.
        s3_log = paths.logs / "s3.log"
        s3_env = {**env, "MOTO_RECORDER_FILEPATH": str(paths.recording)}
        state["s3"] = _spawn(
            [str(bin_dir / "moto_server"), "-H", HOST, "-p", str(ports["s3"])], s3_log, s3_env
        )
        _save(paths, state)

        if not (paths.pgdata / "PG_VERSION").exists():
            _init_cluster(paths)
        _start_postgres(paths, ports["pg"])
        _ensure_database(ports["pg"])
        db_uri = f"postgresql+psycopg2://{DB_ROLE}@{HOST}:{ports['pg']}/{DATABASE}"
        # Create/upgrade the schema once, before any server process touches it (STACK-NOTES).
        _run([str(bin_dir / "mlflow"), "db", "upgrade", db_uri], "mlflow db upgrade", env)

        s3_url = f"http://{HOST}:{ports['s3']}"
        _wait_http(f"{s3_url}/moto-api/", "moto_server", state["s3"], s3_log)
        _restore_s3(paths, s3_url)

        mlflow_log = paths.logs / "mlflow.log"
        state["mlflow"] = _spawn(
            [str(bin_dir / "mlflow"), "server", "--backend-store-uri", db_uri]
            + ["--artifacts-destination", ARTIFACTS, "--host", HOST]
            + ["--port", str(ports["mlflow"]), "--workers", "1"],
            mlflow_log,
            env,
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
    paths.env.write_text(
        f"MLFLOW_TRACKING_URI={tracking_uri}\nMLFLOW_PIPELINE_SERVER_URI={tracking_uri}\n"
    )
    print(f"stack up in {state['startup_s']} s (state and logs in {paths.root})")
    print(f"  postgres  {db_uri}")
    print(f"  s3        {s3_url} bucket {BUCKET!r} (any credentials)")
    print(f"  mlflow    {tracking_uri} (artifacts proxied to {ARTIFACTS})")
    print(tracking_uri)
    return 0


def _restore_s3(paths: Paths, s3_url: str) -> None:
    """Create the bucket, replay what earlier starts recorded (the objects), then record."""
    status, body = _http("PUT", f"{s3_url}/{BUCKET}")
    if status != 200:
        raise StackError(f"creating bucket {BUCKET!r} failed ({status}): {body[:500]}")
    if paths.recording.exists():
        _replay(paths.recording, s3_url)
    status, body = _http("POST", f"{s3_url}/moto-api/recorder/start-recording")
    if status != 200:
        raise StackError(f"starting the S3 recorder failed ({status}): {body[:500]}")


def _replay(recording: Path, s3_url: str) -> None:
    """Send the recorded writes again, to this start's port, and keep only the writes.

    Not moto's own replay: a multipart upload gets a new upload id when replayed, and its
    recorded parts name the old one, so large artifacts (boto3 splits files over 8 MB) would
    be lost. Reads (GET, HEAD) change nothing and are dropped from the recording.
    """
    new_upload = {}  # key -> upload id of a replayed CreateMultipartUpload not yet mapped
    upload_ids = {}  # recorded upload id -> replayed one
    kept, failed = [], []
    for line in recording.read_text().splitlines():
        entry = json.loads(line)
        if entry["method"] in ("GET", "HEAD"):
            continue
        kept.append(line)
        parts = urllib.parse.urlsplit(entry["url"])
        query = parts.query
        if found := UPLOAD_ID.search(query):
            old_id = found.group(2)
            if old_id not in upload_ids:
                upload_ids[old_id] = new_upload.pop(parts.path, old_id)
            new_id = upload_ids[old_id]
            query = UPLOAD_ID.sub(lambda m, new_id=new_id: f"{m[1]}uploadId={new_id}", query)
        url = f"{s3_url}{parts.path}" + (f"?{query}" if query else "")
        body = entry.get("body") or ""
        data = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
        skip = {"host", "content-length", "transfer-encoding", "connection", "accept-encoding"}
        headers = {k: v for k, v in entry["headers"].items() if k.lower() not in skip}
        # Else urllib sends a form content type, and the server parses the body away as a form.
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "binary/octet-stream"  # what S3 assumes without one
        status, response = _http(entry["method"], url, 60, data, headers)
        if status >= 300:  # it may have failed the first time too: report, go on
            failed.append(f"{entry['method']} {parts.path} -> {status}")
        if entry["method"] == "POST" and "uploads" in query.split("&"):
            if found := re.search(r"<UploadId>([^<]+)</UploadId>", response):
                new_upload[parts.path] = urllib.parse.quote(found.group(1), safe="")
    if failed:
        print(
            f"stack: warning: {len(failed)} recorded S3 write(s) failed again, e.g. {failed[0]}",
            file=sys.stderr,
        )
    tmp = recording.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, recording)


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
    paths.env.unlink(missing_ok=True)
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
