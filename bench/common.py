"""The harness every benchmark shares: data, timing a process, the code under test, the report.

Whole processes are timed by ``measure`` (wall, CPU, peak RSS, load); the code under test is a
frozen copy of the package (``frozen_code``); results go to sections of docs/benchmarks.md
(``publish``). Imported by the benchmark modules; imports none of them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
CLI = str(VENV_BIN / "mlflow-pipeline")
MLFLOW_CLI = str(VENV_BIN / "mlflow")
TARGET = "label"
SEED = 42
DATA_VERSION = 2  # bump when generate() changes
# Every stage of the reference pipeline, in order (profile too: leaving it out counted its
# seconds as bookkeeping between the stages).
STAGE_ORDER = ["ingest", "profile", "validate", "split", "train", "evaluate", "register"]


# --------------------------------------------------------------------------------------- data
# Rows are generated and written in chunks of this many: 10M rows (2.5 GB of CSV) never sit in
# memory at once, and every row is drawn afresh (a repeated block would fail the duplicate gate).
CHUNK_ROWS = 1_000_000
LEVELS_A = np.array(["red", "green", "blue", "yellow", "black"])
LEVELS_B = np.array(["north", "south", "east", "west", "central", "remote", "urban", "rural"])


def generate(rows: int, path: Path, seed: int = 20240501) -> None:
    """30 float columns (2 % missing), 2 string columns (3 % missing), a learnable target.

    The target's coefficients come from ``seed``; the rows of chunk k from ``[seed, k]``."""
    w = np.zeros(30)
    w[:12] = np.random.default_rng(seed).normal(0, 0.6, 12)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        for k, start in enumerate(range(0, rows, CHUNK_ROWS)):
            frame = _chunk(np.random.default_rng([seed, k]), min(CHUNK_ROWS, rows - start), w)
            frame.to_csv(out, index=False, header=k == 0, float_format="%.6g")
    tmp.replace(path)


def _chunk(rng: np.random.Generator, rows: int, w: np.ndarray) -> pd.DataFrame:
    x = rng.standard_normal((rows, 30))
    a = rng.choice(len(LEVELS_A), size=rows, p=[0.35, 0.25, 0.2, 0.15, 0.05])
    b = rng.choice(len(LEVELS_B), size=rows)
    logit = (
        x @ w
        + 0.8 * x[:, 12] * x[:, 13]
        + 0.5 * np.sin(2 * x[:, 14])
        + np.array([0.6, -0.2, 0.0, 0.4, -1.0])[a]
        + np.linspace(-0.5, 0.5, len(LEVELS_B))[b]
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    x[rng.random(x.shape) < 0.02] = np.nan
    frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(30)])
    frame["cat_a"] = pd.Series(LEVELS_A[a], dtype=object).mask(rng.random(rows) < 0.03)
    frame["cat_b"] = pd.Series(LEVELS_B[b], dtype=object).mask(rng.random(rows) < 0.03)
    frame[TARGET] = label
    return frame


def dataset(rows: int) -> Path:
    """The generated CSV of ``rows`` rows under bench/results/data/, made once."""
    path = RESULTS / "data" / f"bench_{rows}_v{DATA_VERSION}.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(rows, path)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


def framework_cmd(csv: Path) -> list[str]:
    """The framework's full pipeline on ``csv``, its store and Hydra's folder in the cwd."""
    return [
        CLI,
        "data=csv",
        f"data.path={csv}",
        f"data.target={TARGET}",
        "data.task=classification",
        "features=standard",
        "model=hist_gradient_boosting",
        f"seed={SEED}",
        "evaluation=none",
        "tracking.root=.",
        "hydra.run.dir=hydra",
    ]


# -------------------------------------------------------------------------------- measuring
@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    stdout: str
    stderr: str = ""
    cpu_s: float = 0.0
    # time.perf_counter() when the process was started and reaped: CLOCK_MONOTONIC, the same
    # clock in every process of this machine, so a child's own timestamps can be placed.
    started_at: float = 0.0
    ended_at: float = 0.0
    # 1-minute load average (mean of before and after): other work on the machine.
    load: float = 0.0
    # user + sys of every process of the tree as last sampled (every 250 ms): a lower bound
    # that also counts descendants the process never waited for (wait4 does not see those).
    sampled_cpu_s: float = 0.0
    # distinct processes seen in the tree (the root included)
    processes: int = 0
    extra: dict = field(default_factory=dict)


def measure(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` to completion: wall time, peak RSS (the larger of the exact peak of any one
    process and the tree's sum sampled every 250 ms), and the CPU time (user + sys) of the
    process and every descendant it waited for."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Drain the pipes in threads so a chatty child never blocks on a full pipe.
    chunks: dict[str, list[str]] = {"out": [], "err": []}
    readers = [
        threading.Thread(target=lambda: chunks["out"].append(proc.stdout.read()), daemon=True),
        threading.Thread(target=lambda: chunks["err"].append(proc.stderr.read()), daemon=True),
    ]
    for reader in readers:
        reader.start()
    # A thread blocks in wait4, so the end is exact (not rounded up to the next RSS sample).
    reaped: dict[str, tuple] = {}
    done = threading.Event()

    def reap() -> None:
        waited = os.wait4(proc.pid, 0)
        reaped["at"] = (time.perf_counter(), *waited)
        done.set()

    waiter = threading.Thread(target=reap, daemon=True)
    waiter.start()
    peak = 0
    cpu_seen: dict[int, float] = {}
    while not done.is_set():
        try:
            root = psutil.Process(proc.pid)
            total = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                    times = p.cpu_times()
                    cpu_seen[p.pid] = times.user + times.system
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        done.wait(0.25)
    waiter.join()
    ended, _pid, status, usage = reaped["at"]
    wall = ended - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    out, err = "".join(chunks["out"]), "".join(chunks["err"])
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-4000:]}")
    return Measured(
        wall_s=wall,
        # ru_maxrss: the largest RSS any one process of the tree reached (exact, in KiB);
        # the sampled sum over the tree catches concurrent children (none here in practice).
        peak_rss_mb=max(peak / 2**20, usage.ru_maxrss / 2**10),
        stdout=out,
        stderr=err,
        cpu_s=usage.ru_utime + usage.ru_stime,
        started_at=started,
        ended_at=started + wall,
        load=(load_before + os.getloadavg()[0]) / 2,
        sampled_cpu_s=sum(cpu_seen.values()),
        processes=len(cpu_seen),
    )


def med(values: list[float]) -> float:
    return statistics.median(values)


def summed_calls(stats: dict, profiled: list[tuple[str, str, str]]) -> list[tuple[str, int, float]]:
    """(label, calls, cumulative s) of each (label, file suffix, function) in a cProfile dump."""
    rows = []
    for label, suffix, func in profiled:
        calls, cum = 0, 0.0
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in stats.items():
            if name == func and filename.endswith(suffix):
                calls += nc
                cum += ct
        rows.append((label, calls, cum))
    return rows


# ------------------------------------------------------------------------- background load
@contextmanager
def background_load(processes: int) -> Iterator[None]:
    """``processes`` CPU-bound processes (a pure-Python busy loop each) for the whole block: the
    "one other job on the machine" of ``--background``. Both variants run under it alike."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- code under test
def frozen_code(name: str = "snapshot") -> tuple[Path, str]:
    """A copy of the package and its configs under bench/results/``name``, and what it is.

    Every process of ``--cache`` imports this copy (PYTHONPATH), so an edit to the working
    tree during the benchmark cannot change the code under test, nor the stage code that is
    part of every cache key (which would turn a no-op rerun into misses).
    """
    snapshot = RESULTS / name
    shutil.rmtree(snapshot, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("mlflow_pipeline", "conf"):
        shutil.copytree(ROOT / name, snapshot / name, ignore=ignore)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    commit = git("rev-parse", "--short", "HEAD").strip()
    # Porcelain lines are "XY path": not stripped, the status letters may be blank.
    changed = git("status", "--porcelain", "--", "mlflow_pipeline", "conf").splitlines()
    files = [line[3:] for line in changed]
    what = f"commit {commit}" + (
        f" with uncommitted changes to {', '.join(files)}" if files else " (clean)"
    )
    return snapshot, what


def base_env(snapshot: str = "snapshot") -> dict[str, str]:
    """This environment without a tracking URI, importing the frozen copy of the package."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(RESULTS / snapshot)
    return env


def check_frozen(snapshot: Path, env: dict[str, str]) -> None:
    """Raise unless ``env`` imports the package from ``snapshot``."""
    imported = subprocess.run(
        [PYTHON, "-c", "import mlflow_pipeline; print(mlflow_pipeline.__file__)"],
        cwd=RESULTS,  # not the project root: `python -c` imports from its working directory
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not imported.startswith(str(snapshot)):
        raise RuntimeError(f"the frozen copy is not what gets imported: {imported}")


# --------------------------------------------------------------------------------- report
def machine() -> str:
    """One line on the machine and the versions that matter, for every section's header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import mlflow  # noqa: F401  (version only, after every measurement)
    import pandera
    import sklearn

    return (
        f"{platform.system()} {platform.release()}, {cpu}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GB RAM; Python {platform.python_version()}, "
        f"pandas {pd.__version__}, scikit-learn {sklearn.__version__}, "
        f"pandera {pandera.__version__}, mlflow {sys.modules['mlflow'].__version__}"
    )


# The top of docs/benchmarks.md, written when the file does not exist yet.
HEADER = r"""# Benchmarks

The full pipeline (ingest -> validate -> split -> train -> evaluate -> register) through the
framework, against `bench/bare.py`: one plain Python process doing the same work (read the CSV,
the contract's coercion and checks in pandas, the same stratified split, the same sklearn
Pipeline and HistGradientBoostingClassifier, the same test metrics, the model saved with skops).
Whole processes are timed; ratios are against the baseline measured in the same run.

Run it: `make bench` (= `.venv/bin/python bench/run.py`). Data and temporary stores go to
`bench/results/` (gitignored).

What each measured process runs (`<csv>` is the generated file, `<tmp>` a new temp dir under
`bench/results/` that is the working directory, removed afterwards):

```
# bare
.venv/bin/python bench/bare.py --data <csv> --target label --model-out model.skops --seed 42
# framework: full pipeline incl. register, fresh SQLite store (schema-exists variant: a copy of an
# empty store made once by `mlflow db upgrade` is put at <tmp>/mlflow.db first)
MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db .venv/bin/mlflow-pipeline data=csv data.path=<csv> \
  data.target=label data.task=classification features=standard model=hist_gradient_boosting \
  seed=42 evaluation=none tracking.root=. hydra.run.dir=hydra
```

The data: `bench/common.py` `generate()` (data version 2): the coefficients from numpy seed
20240501, the rows of each chunk of 1M from seed [20240501, chunk], so every row is distinct. It
has 30 standard-normal float columns (2 % missing), `cat_a` (5 levels) and `cat_b` (8 levels)
(3 % missing), and `label` drawn from a logistic model of 12 linear terms, one interaction, one
sine and both categoricals. Written with `%.6g` floats; the 1M-row frame is a 245 MB parquet
artifact.

"""


def publish(raw_name: str, raw: dict, body: str, out: Path, section: tuple[str, str, str]) -> None:
    """Keep the raw results under bench/results/, write ``body`` as a section of ``out``
    (``section``: begin marker, end marker, heading) and print it."""
    (RESULTS / raw_name).write_text(json.dumps(raw, indent=2), encoding="utf-8")
    write_section(out, body, *section)
    print(body)


def write_section(out: Path, body: str, begin: str, end: str, heading: str) -> None:
    """Replace the text between ``begin`` and ``end`` in ``out``; without them, append
    ``heading`` and ``body`` at the end."""
    text = out.read_text(encoding="utf-8") if out.exists() else HEADER
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        out.write_text(head + body + tail, encoding="utf-8")
    else:
        out.write_text(text.rstrip("\n") + "\n\n" + heading + body + "\n", encoding="utf-8")
