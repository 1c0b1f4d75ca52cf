"""The shared tracking stack of scripts/stack.py for end-to-end tests: start it in a folder,
run the real CLI against it with the credentials it wrote, and read its runs and S3 objects
back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import psutil

from .helpers import REPO, Store, assert_ok

STACK_SCRIPT = REPO / "scripts" / "stack.py"
# Any free port for each server, so tests never collide with a stack a developer runs.
FREE_PORTS = {"STACK_MLFLOW_PORT": "0", "STACK_S3_PORT": "0", "STACK_PG_PORT": "0"}


@dataclass
class Stack:
    """A stack whose state (PostgreSQL cluster, S3 recording, logs, pids) lives in ``root``."""

    root: Path

    def script(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(STACK_SCRIPT), command, str(self.root)],
            env={**os.environ, **FREE_PORTS},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def start(self) -> subprocess.CompletedProcess[str]:
        result = self.script("start")
        assert_ok(result)
        return result

    @property
    def state(self) -> dict:
        return json.loads((self.root / "stack.json").read_text())

    @property
    def tracking_uri(self) -> str:
        return self.state["tracking_uri"]

    @property
    def secrets(self) -> dict[str, str]:
        """Every secret the stack generated (DIR/secrets.json)."""
        return json.loads((self.root / "secrets.json").read_text())

    def env_file(self, name: str = "env") -> dict[str, str]:
        """The variables of DIR/env (the client's) or DIR/s3.env (the bucket's key), as a
        shell's `set -a; . FILE` would export them."""
        lines = (self.root / name).read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))

    def s3_client(self, key_id: str | None = None, secret: str | None = None):
        """boto3 S3 client of the stack's bucket: with its key unless another is given."""
        key = self.env_file("s3.env")
        return boto3.client(
            "s3",
            endpoint_url=self.state["s3_endpoint_url"],
            aws_access_key_id=key_id or key["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=secret or key["AWS_SECRET_ACCESS_KEY"],
            region_name=key["AWS_DEFAULT_REGION"],
        )

    def server_pids(self) -> list[int]:
        """The top process of each server started so far (postmaster, moto, mlflow)."""
        pids = []
        postmaster = self.root / "pg" / "postmaster.pid"
        if postmaster.exists():
            pids.append(int(postmaster.read_text().split()[0]))
        state = json.loads((self.root / "stack.json").read_text()) if self.root.exists() else {}
        pids += [state[name]["pid"] for name in ("s3", "mlflow") if name in state]
        return pids

    def processes(self) -> list[psutil.Process]:
        """Every live process of the stack (servers and their children)."""
        found = []
        for pid in self.server_pids():
            try:
                top = psutil.Process(pid)
                found += [top, *top.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        return [p for p in found if is_running(p)]

    def s3_keys(self) -> list[str]:
        """Every object key in the stack's bucket, read from moto directly."""
        pages = self.s3_client().get_paginator("list_objects_v2").paginate(Bucket="mlflow")
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def is_running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a killed server's orphans are reaped by init, eventually)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stack_folder() -> Path:
    """A fresh folder for a stack's state. Not under pytest's tmp dirs: as root, PostgreSQL runs
    as user `postgres`, who cannot enter /tmp/pytest-of-root (mode 0700)."""
    root = Path(tempfile.mkdtemp(prefix="mlflow-stack-"))
    root.chmod(0o755)
    return root


def remove_folder(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class ServerStore(Store):
    """``Store`` whose CLIs track to the stack's server (``tracking=server``) with the variables
    of the stack's env file, as a user who sourced it; ``root`` is only their working directory
    (Hydra outputs, temp files)."""

    stack: Stack = field(kw_only=True)

    @property
    def uri(self) -> str:
        return self.stack.tracking_uri

    def env(self) -> dict[str, str]:
        env = super().env()
        env.update(self.stack.env_file())
        return env

    def pipeline(self, *overrides: str) -> subprocess.CompletedProcess[str]:
        return super().pipeline(*overrides, "tracking=server")
