"""mlflow-pipeline as a framework, used as a new user would: the wheel installed (not editable)
into a fresh virtualenv, ``mlflow-pipeline init`` a project outside this repository on a real
table, ``mlflow run .`` to a champion, reruns, an edit of the project's own stage, its smoke
test, and the champion served from another directory after the project is deleted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_breast_cancer

from .helpers import REPO, VENV_BIN, assert_ok

pytestmark = pytest.mark.slow
TIMEOUT_S = 600
PACKAGE = "tumours"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel of this checkout installed, non-editable. Its dependencies
    come from the CI venv (a .pth file: the same pinned wheels, no second download)."""
    root = tmp_path_factory.mktemp("installed")
    wheels = root / "wheels"
    build = subprocess.run(
        [VENV_BIN / "pip", "wheel", "--no-deps", "-q", "-w", wheels, REPO],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert_ok(build)
    [wheel] = wheels.glob("mlflow_pipeline-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=TIMEOUT_S)
    site = Path(
        subprocess.run(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "ci-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [venv / "bin" / "pip", "install", "--no-deps", "-q", wheel],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert_ok(install)
    return venv


def run(
    venv: Path, *args: str | Path, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def user_env(venv: Path, tmp: Path) -> dict[str, str]:
    """A shell with the fresh venv first on PATH (uvicorn from the CI venv after it)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
    (tmp / "tmp").mkdir(exist_ok=True)
    return {
        **keep,
        "PATH": f"{venv / 'bin'}{os.pathsep}{VENV_BIN}{os.pathsep}{keep.get('PATH', '')}",
        "TMPDIR": str(tmp / "tmp"),
    }


def mlflow_run(venv: Path, project: Path, env: dict[str, str], store: Path) -> str:
    result = run(
        venv,
        venv / "bin" / "python",
        "-m",
        "mlflow",
        "run",
        ".",
        "--env-manager",
        "local",
        "--experiment-name",
        PACKAGE,
        "-P",
        f"hydra_options=tracking.root={store}",
        cwd=project,
        env=env,
    )
    assert_ok(result)
    return result.stdout + result.stderr


def cache_line(output: str) -> str:
    [line] = [line for line in output.splitlines() if line.startswith("cache: ")]
    return line


def test_a_new_project_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    env = user_env(installed, tmp_path)
    # The package imported is the installed wheel, not this checkout.
    where = run(
        installed,
        installed / "bin" / "python",
        "-c",
        "import mlflow_pipeline as m; print(m.__file__)",
        cwd=tmp_path,
        env=env,
    )
    assert str(installed) in where.stdout, where.stdout

    table = load_breast_cancer(as_frame=True).frame
    csv = tmp_path / "tumours.csv"
    table.to_csv(csv, index=False)
    project = tmp_path / "work" / PACKAGE
    init = [installed / "bin" / "mlflow-pipeline", "init", project, f"data.path={csv}"]
    result = run(
        installed, *init, "data.target=target", "data.task=classification", cwd=tmp_path, env=env
    )
    assert_ok(result)
    assert "clean -> train" in result.stdout
    for path in ("MLproject", "conf/config.yaml", "conf/contract.yaml", f"src/{PACKAGE}/stages.py",
                 f"src/{PACKAGE}/features.py", "tests/test_smoke.py", "README.md", ".gitignore",
                 "pyproject.toml", "requirements.txt"):  # fmt: skip
        assert (project / path).is_file(), path
    again = run(  # the flags of earlier versions still work
        installed, *init, "--target", "target", "--task", "classification", cwd=tmp_path, env=env
    )
    assert again.returncode == 1
    assert "exists and is not empty" in again.stderr

    # The store lives outside the project, so the project can be deleted later.
    store = tmp_path / "store"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store / 'tracking.db'}"
    # `mlflow run` makes its run before mlflow-pipeline starts: an experiment it creates keeps
    # artifacts under the working directory (the project). Made here, they live in the store.
    store.mkdir()
    MlflowClient(env["MLFLOW_TRACKING_URI"]).create_experiment(
        PACKAGE, artifact_location=str(store / "mlruns")
    )
    first = mlflow_run(installed, project, env, store)
    assert "promoted to champion" in first
    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_URI"])
    assert str(client.get_model_version_by_alias(PACKAGE, "champion").version) == "1"

    # The second run compares with the new champion (profile, validate rerun) and registers
    # nothing new; the third reuses everything.
    mlflow_run(installed, project, env, store)
    third = mlflow_run(installed, project, env, store)
    assert cache_line(third).startswith("cache: 8 hit(s)"), third
    assert len(client.search_model_versions(f"name = '{PACKAGE}'")) == 1

    # Editing the project's own stage reruns it and the stages after it, and says why.
    stages = project / "src" / PACKAGE / "stages.py"
    stages.write_text(stages.read_text().replace("z.abs() > 4", "z.abs() > 3"))
    edited = mlflow_run(installed, project, env, store)
    assert f"stage clean: cache miss: code changed: {PACKAGE}/stages.py (drop_outliers)" in edited
    assert cache_line(edited) == (
        "cache: 4 hit(s) [ingest, profile, validate, split], "
        "4 ran [clean, train, evaluate, register]"
    )

    # So does editing its feature transformer, which only the config names (a `_target_`).
    features = project / "src" / PACKAGE / "features.py"
    features.write_text(
        features.read_text().replace(
            "quantile(1 - self.quantile)", "quantile(1 - self.quantile / 2)"
        )
    )
    edited = mlflow_run(installed, project, env, store)
    assert f"stage train: cache miss: code changed: {PACKAGE}/features.py (ClipExtremes)" in edited
    assert cache_line(edited) == (
        "cache: 5 hit(s) [ingest, profile, validate, split, clean], "
        "3 ran [train, evaluate, register]"
    )

    # Batch scoring with the champion, whose first step is the project's transformer.
    rows = table.drop(columns=["target"]).head(20)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    scored = run(
        installed,
        installed / "bin" / "mlflow-pipeline",
        "score",
        f"models:/{PACKAGE}@champion",
        "--input",
        tmp_path / "rows.csv",
        "--output",
        tmp_path / "scored.csv",
        cwd=project,
        env=env,
    )
    assert_ok(scored)
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 20

    # The scaffold's own test passes.
    smoke = run(
        installed,
        installed / "bin" / "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        cwd=project,
        env=env,
    )
    assert_ok(smoke)
    assert "2 passed" in smoke.stdout

    # In-process predictions of the champion, then the project is gone and it still serves.
    sample = table.drop(columns=["target"]).head(20)
    sample.to_csv(tmp_path / "sample.csv", index=False)
    predict = (
        "import json, mlflow, numpy as np, pandas as pd; "
        f"m = mlflow.pyfunc.load_model('models:/{PACKAGE}@champion'); "
        f"rows = pd.read_csv('{tmp_path / 'sample.csv'}'); "
        "print(json.dumps(np.asarray(m.predict(rows)).tolist()))"
    )
    in_process = run(installed, installed / "bin" / "python", "-c", predict, cwd=project, env=env)
    assert_ok(in_process)
    expected = json.loads(in_process.stdout.strip().splitlines()[-1])
    shutil.rmtree(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert serve_predictions(installed, env, elsewhere, sample) == expected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_predictions(venv: Path, env: dict[str, str], cwd: Path, sample: pd.DataFrame) -> list:
    """``mlflow models serve`` of the champion from ``cwd``; its answer for ``sample``."""
    port = free_port()
    serve = [venv / "bin" / "python", "-m", "mlflow", "models", "serve", "-m",
             f"models:/{PACKAGE}@champion", "--env-manager", "local", "-p", str(port)]  # fmt: skip
    with (cwd / "serve.log").open("w") as log:
        process = subprocess.Popen(
            [str(a) for a in serve], cwd=cwd, env=env, stdout=log, stderr=log
        )
    try:
        body = json.dumps({"dataframe_split": sample.to_dict(orient="split")}).encode()
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (cwd / "serve.log").read_text()
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/invocations",
                    data=body,
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return json.loads(answer.read())["predictions"]
            except OSError:
                assert time.monotonic() < deadline, (cwd / "serve.log").read_text()
                time.sleep(1)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
