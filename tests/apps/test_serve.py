"""serve: the serve command and its environment, ports, exit codes, and how a signal
reaches the server and leaves nothing running."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from mlflow_pipeline.apps import serve
from mlflow_pipeline.errors import ConfigError


def test_serve_command_is_mlflow_models_serve_with_the_local_env_manager():
    command = serve.serve_command("models:/m/3", host="127.0.0.1", port=5123)
    assert command == [
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/m/3",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "-p",
        "5123",
    ]


def test_serve_env_puts_the_venv_first_on_path_and_names_the_store():
    env = serve.serve_env(
        {"PATH": "/usr/bin", "HOME": "/root"}, tracking_uri="sqlite:///x.db", bin_path=Path("/v")
    )
    assert env["PATH"] == f"/v{os.pathsep}/usr/bin"
    assert env["MLFLOW_TRACKING_URI"] == env["MLFLOW_REGISTRY_URI"] == "sqlite:///x.db"
    assert env["HOME"] == "/root"
    assert serve.bin_dir().joinpath("python").exists()


def test_exit_codes_and_urls():
    assert serve.exit_code(0) == 0
    assert serve.exit_code(3) == 3
    assert serve.exit_code(-15) == 143
    assert serve.url_of("127.0.0.1", 5001) == "http://127.0.0.1:5001"
    assert serve.url_of("::1", 5001) == "http://[::1]:5001"


def test_a_taken_port_is_refused_before_starting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"--port {port} on 127.0.0.1: already in use"):
            serve.check_port_free("127.0.0.1", port)
        assert not serve.is_healthy(f"http://127.0.0.1:{port}", timeout_s=0.2)
    with pytest.raises(ConfigError, match="not a TCP port"):
        serve.check_port_free("127.0.0.1", 70000)


# A stand-in for `mlflow models serve`: a process that starts the server (a grandchild that
# records the signal it gets) and waits for it.
SERVER_SCRIPT = """
import pathlib, signal, sys, time
marker = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    marker.write_text(str(signum))
    sys.exit(0)
signal.signal(signal.SIGINT, stop)
signal.signal(signal.SIGTERM, stop)
marker.with_suffix(".ready").touch()
while True:
    time.sleep(0.05)
"""
LAUNCHER_SCRIPT = """
import subprocess, sys
sys.exit(subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]]).wait())
"""


def test_a_signal_reaches_the_server_and_nothing_is_left_running(tmp_path):
    marker = tmp_path / "server.signal"
    server = serve._Server()
    child = server.start(
        [sys.executable, "-c", LAUNCHER_SCRIPT, SERVER_SCRIPT, str(marker)], dict(os.environ)
    )
    deadline = time.monotonic() + 30
    while not marker.with_suffix(".ready").exists():
        assert time.monotonic() < deadline, "the stand-in server did not start"
        assert child.poll() is None
        time.sleep(0.05)

    server.forward(signal.SIGINT, None)
    server.stop_all()

    assert marker.read_text() == str(int(signal.SIGINT))  # the server itself got the Ctrl-C
    assert child.returncode is not None
    assert serve.exit_code(-server.signal) == 130
    with pytest.raises(ProcessLookupError):
        os.killpg(child.pid, 0)  # no process of its group is left
