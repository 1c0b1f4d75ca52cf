"""Serve a registered model version over HTTP with ``mlflow models serve`` (local env) as a
child process: resolve the version, start the server, forward SIGINT/SIGTERM to it, report when
its port answers, and leave nothing running when it stops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

from mlflow_pipeline.apps.score import ResolvedModel, resolve_model
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.store.artifacts import trusted_model_copy
from mlflow_pipeline.tags import Env

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
# After SIGINT/SIGTERM is forwarded: how long the server may take to stop before SIGKILL.
STOP_GRACE_S = 20.0
HEALTH_POLL_S = 0.5


def bin_dir() -> Path:
    """The bin directory of this Python environment (where ``mlflow`` and ``uvicorn`` live)."""
    return Path(sys.executable).parent


def serve_command(model_uri: str, *, host: str, port: int, mlflow: str = "mlflow") -> list[str]:
    """The ``mlflow models serve`` command line for a model (a resolved ``models:/NAME/VERSION``
    or the local copy that was checked)."""
    return [
        mlflow,
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        host,
        "-p",
        str(port),
    ]


def serve_env(environ: Mapping[str, str], *, tracking_uri: str, bin_path: Path) -> dict[str, str]:
    """``environ`` with ``bin_path`` first on PATH (``mlflow models serve`` runs ``uvicorn``
    from PATH) and the tracking and registry URIs set."""
    env = dict(environ)
    path = env.get("PATH", "")
    env["PATH"] = f"{bin_path}{os.pathsep}{path}" if path else str(bin_path)
    env[Env.TRACKING_URI] = tracking_uri
    env[Env.REGISTRY_URI] = tracking_uri
    env.setdefault(Env.ARTIFACTS_PROGRESS_BAR, "false")
    return env


def check_port_free(host: str, port: int) -> None:
    """Raises ConfigError when ``host:port`` cannot be bound (in use, or not an address here)."""
    if not 0 < port < 65536:
        raise ConfigError(f"--port {port}: not a TCP port (1-65535)", stage="serve")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: connections of a server that just stopped (TIME_WAIT) do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ConfigError(f"--port {port} on {host}: {reason}", stage="serve") from exc


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def exit_code(returncode: int) -> int:
    """A child's return code as a shell reports it (killed by signal N -> 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def is_healthy(url: str, timeout_s: float = 1.0) -> bool:
    """Does ``url``/health answer 200?"""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _say(line: str) -> None:
    print(line, flush=True)  # promptly, also when stdout is a file or a pipe


def serve(
    model_uri: str,
    *,
    tracking_uri: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    say: Callable[[str], None] = _say,
    allow_unsafe: bool = False,
) -> int:
    """Serve the registered version ``model_uri`` with ``mlflow models serve`` (local env) as a
    child process until it stops; SIGINT and SIGTERM are forwarded to the server, and this
    returns only once every process of the server is gone (its port free). Returns the child's
    exit code, or 128 + N when signal N stopped it (as a shell reports it).

    The version is downloaded and checked first (store.artifacts.check_trusted_model), and the
    server serves that checked copy: a model that could run code when loaded is refused before
    any server starts, unless ``allow_unsafe``.

    Raises ConfigError for an unknown model, alias or version, or a port that is taken;
    UntrustedModelError for a model in a format we do not trust.
    """
    model = resolve_model(model_uri, tracking_uri)
    check_port_free(host, port)
    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-serve-") as staging:
        local = trusted_model_copy(model.uri, staging, allow_unsafe=allow_unsafe)
        return _serve_copy(model, local, tracking_uri=tracking_uri, host=host, port=port, say=say)


def _serve_copy(
    model: ResolvedModel,
    local: Path,
    *,
    tracking_uri: str,
    host: str,
    port: int,
    say: Callable[[str], None],
) -> int:
    """Serve the checked local copy ``local`` of ``model`` until the server stops."""
    bin_path = bin_dir()
    mlflow_exe = bin_path / "mlflow"
    command = serve_command(
        str(local),
        host=host,
        port=port,
        mlflow=str(mlflow_exe) if mlflow_exe.exists() else "mlflow",
    )
    url = url_of(host, port)
    say(
        f"serving {model.name} v{model.version} ({model.requested} -> {model.uri}) at {url}: "
        f"POST {url}/invocations, GET {url}/health"
    )
    env = serve_env(os.environ, tracking_uri=tracking_uri, bin_path=bin_path)
    server = _Server()
    previous = {sig: signal.signal(sig, server.forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        child = server.start(command, env)
        _watch(server, child, url, say, f"ready: {url} serves {model.name} v{model.version}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop_all()
    if server.signal is not None:  # stopped on request: report it as that signal's exit
        return exit_code(-server.signal)
    return exit_code(child.returncode)


def _watch(
    server: _Server,
    child: subprocess.Popen,
    url: str,
    say: Callable[[str], None],
    ready_line: str,
) -> None:
    """Until ``child`` exits: say ``ready_line`` once ``url`` is healthy (unless a signal asked
    the server to stop first), and kill the server when it overstays a stop request."""
    ready = False
    while child.poll() is None:
        if not ready and server.signal is None and is_healthy(url):
            ready = True
            say(ready_line)
        server.tick()
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=HEALTH_POLL_S)


class _Server:
    """The child ``mlflow models serve``, in a process group of its own, and how it stops."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        # The signal that asked the server to stop, and when.
        self.signal: int | None = None
        self.signalled_at: float | None = None

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        # Its own session: a terminal's Ctrl-C reaches only us, and we decide how the server
        # (mlflow's CLI and the uvicorn it starts) stops.
        self.child = subprocess.Popen(command, env=env, start_new_session=True)
        if self.signal is not None:  # a signal came while it was starting
            self._stop(self.signal)
        return self.child

    def forward(self, signum: int, frame: FrameType | None) -> None:
        """First SIGINT/SIGTERM: stop the server gracefully; a second one: kill it."""
        if self.signal is not None:
            self._kill_group(signal.SIGKILL)
            return
        self.signal = signum
        self.signalled_at = time.monotonic()
        if self.child is not None:
            self._stop(signum)

    def _stop(self, signum: int) -> None:
        # The server (uvicorn) gets the signal and stops gracefully. mlflow's CLI only waits
        # for it, and would print a traceback about its non-zero exit (uvicorn re-raises the
        # signal): it is ended quietly with SIGTERM, which also reaches uvicorn (mlflow sets
        # it as uvicorn's parent-death signal) and only repeats the request to stop.
        assert self.child is not None
        for pid in _descendants(self.child.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child.pid, signal.SIGTERM)

    def tick(self) -> None:
        """Kill the group when it has not stopped within STOP_GRACE_S of a signal."""
        if self.signalled_at is not None and time.monotonic() - self.signalled_at > STOP_GRACE_S:
            self._kill_group(signal.SIGKILL)

    def stop_all(self) -> None:
        """Leave nothing behind: wait for the child, then for (or kill) the rest of its group."""
        if self.child is None:
            return
        if self.child.poll() is None:
            self._stop(signal.SIGTERM)
            try:
                self.child.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGKILL)
                self.child.wait()
        deadline = time.monotonic() + STOP_GRACE_S
        while self._group_alive():
            if time.monotonic() > deadline:
                self._kill_group(signal.SIGKILL)
                break
            time.sleep(0.1)

    def _kill_group(self, sig: int) -> None:
        if self.child is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, sig)

    def _group_alive(self) -> bool:
        if self.child is None:
            return False
        try:
            os.killpg(self.child.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True


def _descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []
