"""Serve a registered model version over HTTP: MLflow's scoring server (its protocol, formats
and endpoints: /invocations, /health, /ping, /version) run by uvicorn in a child process, with
every request held to the version's training contract before the model sees it (the same check
``score`` applies: apps.score.score_rows). The parent resolves and checks the version, starts
the server, forwards SIGINT/SIGTERM to it, reports when its port answers, and leaves nothing
running when it stops.
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
from typing import TYPE_CHECKING, Any

from mlflow_pipeline.apps.score import (
    PREDICTION,
    ResolvedModel,
    Scorer,
    resolve_model,
    score_rows,
    scorer_of,
    training_of,
)
from mlflow_pipeline.errors import ConfigError, DataError, PipelineError
from mlflow_pipeline.store.artifacts import trusted_model_copy
from mlflow_pipeline.tags import Env

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
# After SIGINT/SIGTERM is forwarded: how long the server may take to stop before SIGKILL.
STOP_GRACE_S = 20.0
HEALTH_POLL_S = 0.5


def bin_dir() -> Path:
    """The bin directory of this Python environment (where ``mlflow`` and ``uvicorn`` live)."""
    return Path(sys.executable).parent


def serve_command(
    model_uri: str,
    local: str | Path,
    *,
    tracking_uri: str,
    host: str,
    port: int,
    allow_unsafe: bool = False,
    python: str = sys.executable,
) -> list[str]:
    """The command line of the server process: this module's ``server_main`` serving the
    resolved version ``model_uri`` (``models:/NAME/VERSION``) from its checked local copy."""
    command = [
        python,
        "-m",
        __name__ if __name__ != "__main__" else "mlflow_pipeline.apps.serve",
        "--model-uri",
        model_uri,
        "--local",
        str(local),
        "--tracking-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
    ]
    return [*command, "--allow-unsafe"] if allow_unsafe else command


def serve_env(environ: Mapping[str, str], *, tracking_uri: str, bin_path: Path) -> dict[str, str]:
    """``environ`` with ``bin_path`` first on PATH (tools the server may start are this
    environment's) and the tracking and registry URIs set (for MLflow itself; the server is
    told the store by its arguments)."""
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
    """Serve the registered version ``model_uri`` with MLflow's scoring server, held to the
    version's training contract, in a child process until it stops; SIGINT and SIGTERM are
    forwarded to the server, and this returns only once every process of the server is gone
    (its port free). Returns the child's exit code, or 128 + N when signal N stopped it (as a
    shell reports it).

    The version is downloaded and checked first (store.artifacts.check_trusted_model), and the
    server loads that checked copy through store.artifacts.load_trusted_model: a model that
    could run code when loaded is refused before any server starts, unless ``allow_unsafe``.
    A request whose rows break the training contract is answered 400 with a one-line reason
    naming column and check; the rows ``score`` accepts get the predictions ``score`` gives.

    Raises ConfigError for an unknown model, alias or version, or a port that is taken;
    PipelineError for a version without lineage (its contract is unknown);
    UntrustedModelError for a model in a format we do not trust.
    """
    model = resolve_model(model_uri, tracking_uri)
    training_of(model)  # a version whose contract is unknown is refused before any server starts
    check_port_free(host, port)
    with tempfile.TemporaryDirectory(prefix="mlflow-pipeline-serve-") as staging:
        local = trusted_model_copy(model.uri, staging, allow_unsafe=allow_unsafe)
        return _serve_copy(
            model,
            local,
            tracking_uri=tracking_uri,
            host=host,
            port=port,
            say=say,
            allow_unsafe=allow_unsafe,
        )


def _serve_copy(
    model: ResolvedModel,
    local: Path,
    *,
    tracking_uri: str,
    host: str,
    port: int,
    say: Callable[[str], None],
    allow_unsafe: bool = False,
) -> int:
    """Serve the checked local copy ``local`` of ``model`` until the server stops."""
    bin_path = bin_dir()
    command = serve_command(
        model.uri,
        local,
        tracking_uri=tracking_uri,
        host=host,
        port=port,
        allow_unsafe=allow_unsafe,
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


def _die_with_parent() -> None:
    """In the server process (Linux): SIGTERM when we die, even by SIGKILL, so a killed
    ``serve`` leaves no server behind in its own session."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


# prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


class _Server:
    """The child server process, in a process group of its own, and how it stops."""

    def __init__(self) -> None:
        self.child: subprocess.Popen | None = None
        # The signal that asked the server to stop, and when.
        self.signal: int | None = None
        self.signalled_at: float | None = None

    def start(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        # Its own session: a terminal's Ctrl-C reaches only us, and we decide how the server
        # (and anything it starts) stops.
        self.child = subprocess.Popen(
            command, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )
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
        # Any process the server started gets the signal itself; the server (uvicorn) is asked
        # to stop with SIGTERM, which it answers by finishing the requests in flight (SIGINT
        # would make it re-raise the signal and print a traceback).
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
            if self.signal is None:
                self._stop(signal.SIGTERM)
            # else: already asked to stop. A SIGTERM now reached the server on top of the
            # forwarded Ctrl-C, and stopped it as the second signal (CI, once).
            try:
                self.child.wait(timeout=self._grace_left())
            except subprocess.TimeoutExpired:
                self._kill_group(signal.SIGKILL)
                self.child.wait()
        deadline = time.monotonic() + STOP_GRACE_S
        while self._group_alive():
            if time.monotonic() > deadline:
                self._kill_group(signal.SIGKILL)
                break
            time.sleep(0.1)

    def _grace_left(self) -> float:
        """Seconds the server may still take to stop: STOP_GRACE_S from the signal, if any."""
        if self.signalled_at is None:
            return STOP_GRACE_S
        return max(0.0, STOP_GRACE_S - (time.monotonic() - self.signalled_at))

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


# ---- the server process --------------------------------------------------------------------

# What a refused request's JSON says in ``error_code`` (as MLflow's own 4xx answers do).
REFUSED_CODE = "INVALID_PARAMETER_VALUE"
REQUEST_STAGE = "serve"
REQUEST_DATASET = "request"
MAX_REASON = 2000
NOT_A_TABLE = (
    "the request holds no table of rows: send dataframe_split, dataframe_records, or inputs / "
    "instances as one record per row"
)


def one_line(message: str) -> str:
    """A multi-line message as one line: its lines stripped (of list bullets too) and joined
    with ``; ``."""
    lines = [line.strip().removeprefix("- ") for line in str(message).splitlines()]
    return "; ".join(line for line in lines if line)


def refusal(message: str, status: int = 400, code: str = REFUSED_CODE) -> tuple[int, dict]:
    """The HTTP status and JSON body of a refused request: a one-line reason (at most
    MAX_REASON characters: MLflow's own messages may quote the whole payload), no stack
    trace."""
    reason = one_line(message)
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return status, {"error_code": code, "message": reason}


def request_frame(data: Any) -> pd.DataFrame:
    """The rows of a request as MLflow's scoring server parsed them (a DataFrame for the
    dataframe_* formats; columns of values for inputs / instances, or a list of records when
    ``inputs`` holds one object per row).

    Raises DataError when the request does not hold a table of rows, or holds no row."""
    import pandas as pd

    frame = None
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, dict) or (
        isinstance(data, list) and data and all(isinstance(row, dict) for row in data)
    ):
        try:
            frame = pd.DataFrame(data)
        except ValueError as exc:
            raise DataError(f"{NOT_A_TABLE} ({exc})", stage=REQUEST_STAGE) from exc
    elif isinstance(data, list) and not data:
        frame = pd.DataFrame()
    if frame is None:
        raise DataError(NOT_A_TABLE, stage=REQUEST_STAGE)
    if frame.empty:
        raise DataError("the request holds no row to score", stage=REQUEST_STAGE)
    return frame


class _Refused(Exception):
    """The one-line reason a request was refused, as the cause of the MlflowException
    ``predict`` raises: MLflow's ``invocations`` re-raises that exception after prefixing the
    whole input to its message (and wraps any other exception with a stack trace), so the
    handler reads the reason from the cause."""


class ContractModel:
    """The model MLflow's scoring server calls: each request's rows go through
    apps.score.score_rows (the training contract, then the estimator)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            scored = score_rows(
                request_frame(data), self.scorer, stage=REQUEST_STAGE, dataset=REQUEST_DATASET
            )
        except PipelineError as exc:  # the contract refused the rows, or they are no table
            reason = one_line(str(exc))
            raise MlflowException(reason, error_code=REFUSED_CODE) from _Refused(reason)
        if scored.warning:
            print(one_line(scored.warning), file=sys.stderr, flush=True)
        return scored.predictions[PREDICTION].to_numpy()


def serving_app(scorer: Scorer) -> Any:
    """MLflow's scoring server app (``mlflow.pyfunc.scoring_server.init``) for ``scorer``, its
    /invocations answering every error with one line of JSON (``error_code``, ``message``):
    400 for rows that break the contract, MLflow's status for a malformed payload; a stack
    trace only ever goes to the server's log."""
    import asyncio
    import json
    import traceback

    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel, scoring_server

    # No signature: the training contract is the schema (MLflow's enforcement would refuse
    # int64 input for a float feature, and answer a missing column with a stack trace).
    served = PyFuncModel(model_meta=Model(), model_impl=ContractModel(scorer))
    app = scoring_server.init(served)
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/invocations"]

    async def invocations(request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type") or ""
        try:
            result = await asyncio.to_thread(
                scoring_server.invocations, body, content_type, served, None
            )
        except MlflowException as exc:
            refused = exc.__cause__
            if isinstance(refused, _Refused):
                status, answer = refusal(str(refused))
            else:
                if exc.json_kwargs.get("stack_trace"):
                    print(exc.json_kwargs["stack_trace"], file=sys.stderr, flush=True)
                status, answer = refusal(exc.message, exc.get_http_status_code(), exc.error_code)
            return JSONResponse(answer, status_code=status)
        except Exception as exc:  # a bug of ours: logged in full, answered in one line
            traceback.print_exc()
            status, answer = refusal(f"{type(exc).__name__}: {exc}", 500, "INTERNAL_ERROR")
            return JSONResponse(answer, status_code=status)
        if result.status != 200 and result.mimetype != "application/json":
            body_text = json.dumps(refusal(result.response, result.status)[1])
            return Response(body_text, status_code=result.status, media_type="application/json")
        return Response(result.response, status_code=result.status, media_type=result.mimetype)

    # A plain Starlette route: the handler gets the request as it is (FastAPI would read the
    # postponed annotation as a query parameter).
    app.add_route("/invocations", invocations, methods=["POST"])
    return app


def load_scorer(
    model_uri: str, local: Path, *, tracking_uri: str, allow_unsafe: bool = False
) -> Scorer:
    """The ``Scorer`` of the registered version ``model_uri``: its checked local copy ``local``
    loaded through store.artifacts.load_trusted_model, held to its training contract.

    Raises ConfigError, PipelineError or UntrustedModelError as ``serve`` does."""
    from mlflow_pipeline.store.artifacts import load_trusted_model

    model = resolve_model(model_uri, tracking_uri)
    estimator = load_trusted_model(str(local), allow_unsafe=allow_unsafe)
    return scorer_of(model, estimator, training_of(model))


def server_main(argv: list[str] | None = None) -> int:
    """The server process (``serve_command``): load the version and serve it with uvicorn
    until SIGTERM. Returns 0 once stopped, 1 when the version cannot be served."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="mlflow-pipeline serve (server)")
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--local", required=True, type=Path)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--allow-unsafe", action="store_true")
    args = parser.parse_args(argv)
    try:
        scorer = load_scorer(
            args.model_uri,
            args.local,
            tracking_uri=args.tracking_uri,
            allow_unsafe=args.allow_unsafe,
        )
    except PipelineError as exc:
        print(f"mlflow-pipeline serve: error: {one_line(str(exc))}", file=sys.stderr, flush=True)
        return 1
    uvicorn.run(serving_app(scorer), host=args.host, port=args.port, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(server_main())
