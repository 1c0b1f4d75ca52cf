"""The framework against a bare script doing the same work, as whole processes.

    python bench/run.py [--rows 1000000] [--repeat 1] [--out docs/benchmarks.md]
                        [--context-rows 100000] [--profile]

1. Generates a deterministic CSV (30 float columns with missing values, 2 string categorical
   columns with missing values, a binary target that depends on them) under bench/results/.
2. Runs, as separate processes, ``bench/bare.py`` and ``mlflow-pipeline data=csv ...`` (the full
   pipeline including register) on a fresh SQLite store per run; also the framework on a store
   whose schema already exists (created before the clock starts), to separate the one-off
   schema creation from the per-run cost. The order alternates between repeats.
   Wall time is measured around the process, CPU time is the process tree's user + sys
   (``os.wait4``); peak RSS is the larger of the exact peak of any one process (ru_maxrss)
   and the tree's RSS sum sampled every 250 ms with psutil.
3. Reads each stage run's own ``wall_time_s`` / ``peak_rss_mb`` metrics from the store, and with
   ``--profile`` runs the framework once more under cProfile to split its time by function.
4. Writes the results between the ``bench:begin`` / ``bench:end`` markers of ``--out`` (the
   rest of the file is kept), or the whole file when it has no markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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
TARGET_RATIO = 1.25
DATA_VERSION = 1  # bump when generate() changes
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


# --------------------------------------------------------------------------------------- data
def generate(rows: int, path: Path, seed: int = 20240501) -> None:
    """30 float columns (2 % missing), 2 string columns (3 % missing), a learnable target."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, 30))
    levels_a = np.array(["red", "green", "blue", "yellow", "black"])
    levels_b = np.array(["north", "south", "east", "west", "central", "remote", "urban", "rural"])
    a = rng.choice(len(levels_a), size=rows, p=[0.35, 0.25, 0.2, 0.15, 0.05])
    b = rng.choice(len(levels_b), size=rows)
    w = np.zeros(30)
    w[:12] = rng.normal(0, 0.6, 12)
    logit = (
        x @ w
        + 0.8 * x[:, 12] * x[:, 13]
        + 0.5 * np.sin(2 * x[:, 14])
        + np.array([0.6, -0.2, 0.0, 0.4, -1.0])[a]
        + np.linspace(-0.5, 0.5, len(levels_b))[b]
    )
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    x[rng.random(x.shape) < 0.02] = np.nan
    frame = pd.DataFrame(x, columns=[f"x{i:02d}" for i in range(30)])
    frame["cat_a"] = pd.Series(levels_a[a], dtype=object).mask(rng.random(rows) < 0.03)
    frame["cat_b"] = pd.Series(levels_b[b], dtype=object).mask(rng.random(rows) < 0.03)
    frame[TARGET] = label
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)


def dataset(rows: int) -> Path:
    path = RESULTS / "data" / f"bench_{rows}_v{DATA_VERSION}.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(rows, path)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s", flush=True)
    return path


# -------------------------------------------------------------------------------- measuring
@dataclass
class Measured:
    wall_s: float
    peak_rss_mb: float
    stdout: str
    cpu_s: float = 0.0
    # 1-minute load average (mean of before and after): other work on the machine.
    load: float = 0.0
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
    peak = 0
    root = psutil.Process(proc.pid)
    while True:
        try:
            total = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, total)
        except psutil.Error:
            pass
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.25)
    wall = time.perf_counter() - started
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
        cpu_s=usage.ru_utime + usage.ru_stime,
        load=(load_before + os.getloadavg()[0]) / 2,
    )


def framework_cmd(csv: Path) -> list[str]:
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


def bare_cmd(csv: Path) -> list[str]:
    return [
        PYTHON,
        str(ROOT / "bench" / "bare.py"),
        "--data",
        str(csv),
        "--target",
        TARGET,
        "--model-out",
        "model.skops",
        "--seed",
        str(SEED),
    ]


def run_bare(csv: Path) -> Measured:
    with tempfile.TemporaryDirectory(prefix="bare-", dir=RESULTS) as tmp:
        m = measure(bare_cmd(csv), cwd=Path(tmp))
    m.extra = json.loads(m.stdout.strip().splitlines()[-1])
    return m


def template_store() -> Path:
    """An empty store with MLflow's schema, created once (untimed) for the warm-store runs."""
    path = RESULTS / "template" / "mlflow.db"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [MLFLOW_CLI, "db", "upgrade", f"sqlite:///{path}"], check=True, capture_output=True
        )
    return path


def run_framework(csv: Path, *, schema_exists: bool, profile: Path | None = None) -> Measured:
    with tempfile.TemporaryDirectory(prefix="framework-", dir=RESULTS) as tmp:
        work = Path(tmp)
        if schema_exists:
            shutil.copy(template_store(), work / "mlflow.db")
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        cmd = framework_cmd(csv)
        if profile is not None:
            cmd = [PYTHON, "-m", "cProfile", "-o", str(profile), *cmd]
        m = measure(cmd, cwd=work, env=env)
        m.extra = stage_metrics(work / "mlflow.db")
    return m


def stage_metrics(db: Path) -> dict:
    """Per stage run: its own wall_time_s / peak_rss_mb metrics and its run's span; the
    pipeline run's span; the evaluate metrics."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = con.execute(
            "select r.run_uuid, t.value, r.start_time, r.end_time from runs r "
            "join tags t on t.run_uuid = r.run_uuid and t.key = 'pipeline.kind'"
        ).fetchall()
        stage_of = dict(
            con.execute("select run_uuid, value from tags where key = 'pipeline.stage'").fetchall()
        )
        metrics: dict[str, dict[str, float]] = {}
        for run_uuid, key, value in con.execute(
            "select run_uuid, key, value from latest_metrics"
        ).fetchall():
            metrics.setdefault(run_uuid, {})[key] = value
    finally:
        con.close()
    stages, pipeline = {}, {}
    for run_uuid, kind, start, end in runs:
        span = (end - start) / 1000 if end and start else None
        if kind == "pipeline":
            pipeline = {"span_s": span}
        else:
            stages[stage_of[run_uuid]] = {"span_s": span, **metrics.get(run_uuid, {})}
    return {"pipeline": pipeline, "stages": stages}


def import_cost(modules: str) -> float:
    """Whole-process wall time of ``python -c 'import ...'`` (median of 3)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-c", f"import {modules}"], check=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# ------------------------------------------------------------------------------- profiling
PROFILED = [
    # (label, file suffix, function name)
    ("validation (pandera, every boundary)", "mlflow_pipeline/validation.py", "validate"),
    ("digests (io.digest)", "mlflow_pipeline/io.py", "digest"),
    ("parquet artifacts (io.save_frame)", "mlflow_pipeline/io.py", "save_frame"),
    ("model logging (io.log_model)", "mlflow_pipeline/io.py", "log_model"),
    ("text artifacts (io.save_text)", "mlflow_pipeline/io.py", "save_text"),
    ("ingest function (read_csv)", "mlflow_pipeline/stages/ingest.py", "ingest"),
    ("validate function (infer + gate)", "mlflow_pipeline/stages/validate.py", "validate_data"),
    ("split function", "mlflow_pipeline/stages/split.py", "split"),
    ("train function (fit)", "mlflow_pipeline/stages/train.py", "train"),
    ("evaluate function", "mlflow_pipeline/stages/evaluate.py", "evaluate"),
    ("register function", "mlflow_pipeline/stages/register.py", "register"),
    ("stage run wrapper (run_stage, all stages)", "mlflow_pipeline/stage.py", "run_stage"),
    ("pipeline (run_pipeline)", "mlflow_pipeline/runner.py", "run_pipeline"),
]


def profile_breakdown(path: Path) -> list[tuple[str, int, float]]:
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    rows = []
    for label, suffix, func in PROFILED:
        calls, cum = 0, 0.0
        for (filename, _line, name), (_cc, nc, _tt, ct, _callers) in stats.items():
            if name == func and filename.endswith(suffix):
                calls += nc
                cum += ct
        rows.append((label, calls, cum))
    return rows


# --------------------------------------------------------------------------------- report
def machine() -> str:
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


def med(values: list[float]) -> float:
    return statistics.median(values)


def render(results: dict, args: argparse.Namespace, env_notes: dict) -> str:
    lines = [
        BEGIN,
        "",
        f"_Generated by `python bench/run.py {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}._",
        "",
        f"**Machine:** {machine()}.",
        "",
        f"**Repeats:** {args.repeat} per variant at each size, order alternating; medians shown.",
        "",
        "Wall time is what the target is about. CPU time (user + sys of the process tree) is "
        "shown too because other work was running on this shared machine (see the load "
        "averages below); it is less sensitive to that than wall time.",
        "",
        "| rows | bare s | framework s (fresh store) | **ratio** | framework s (schema exists) "
        "| ratio | CPU s bare / framework (fresh) | CPU ratio | peak RSS bare "
        "| peak RSS framework | roc_auc bare / framework |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rows, r in results.items():
        bare = med([m.wall_s for m in r["bare"]])
        fresh = med([m.wall_s for m in r["fresh"]])
        warm = med([m.wall_s for m in r["warm"]]) if r["warm"] else 0.0
        auc_b = r["bare"][0].extra["scores"]["roc_auc"]
        auc_f = r["fresh"][0].extra["stages"]["evaluate"].get("roc_auc", float("nan"))
        rss_b = max(m.peak_rss_mb for m in r["bare"])
        rss_f = max(m.peak_rss_mb for m in r["fresh"] + r["warm"])
        cpu_b = med([m.cpu_s for m in r["bare"]])
        cpu_f = med([m.cpu_s for m in r["fresh"]])
        warm_cells = f"{warm:.1f} | {warm / bare:.2f}x" if r["warm"] else "- | -"
        lines.append(
            f"| {rows:,} | {bare:.1f} | {fresh:.1f} | **{fresh / bare:.2f}x** | {warm_cells} | "
            f"{cpu_b:.1f} / {cpu_f:.1f} | {cpu_f / cpu_b:.2f}x | "
            f"{rss_b:,.0f} MB | {rss_f:,.0f} MB | {auc_b:.4f} / {auc_f:.4f} |"
        )
    main_rows = args.rows
    r = results[main_rows]
    bare = med([m.wall_s for m in r["bare"]])
    fresh = med([m.wall_s for m in r["fresh"]])
    ratio = fresh / bare
    verdict = "**met**" if ratio <= TARGET_RATIO else "**not met**"
    lines += [
        "",
        f"**Target** (framework within {TARGET_RATIO}x of the bare script at "
        f"{main_rows:,} rows, fresh store): {verdict} ({ratio:.2f}x).",
        "",
        "Raw measurements (wall s / CPU s / peak RSS MB / 1-min load average), in run order:",
        "",
    ]
    for rows, rr in results.items():
        for kind in ("bare", "fresh", "warm"):
            cells = ", ".join(
                f"{m.wall_s:.1f} / {m.cpu_s:.1f} / {m.peak_rss_mb:,.0f} / {m.load:.1f}"
                for m in rr[kind]
            )
            if cells:
                lines.append(f"- {rows:,} rows, {kind}: {cells}")

    for rows, rr in results.items():
        bare_times = {
            k: med([m.extra["times"][k] for m in rr["bare"]]) for k in rr["bare"][0].extra["times"]
        }
        runs = rr["fresh"] + rr["warm"]
        stage_names = list(runs[0].extra["stages"])
        order = ["ingest", "validate", "split", "train", "evaluate", "register"]
        stage_names = [s for s in order if s in stage_names]
        lines += [
            "",
            f"### Where the time goes at {rows:,} rows (medians over every framework run)",
            "",
            "Each row is its own median, so the rows need not add up to the whole.",
            "",
            "| part | bare s | framework s |",
            "|---|---:|---:|",
        ]
        wall = med([m.wall_s for m in runs])
        pipeline_span = med([m.extra["pipeline"]["span_s"] for m in runs])
        lines.append(
            f"| process start + imports (+ Hydra compose, store set-up for the framework) | "
            f"{bare_times['imports']:.1f} | {wall - pipeline_span:.1f} |"
        )
        bare_for = {
            "ingest": bare_times["read_csv"],
            "validate": bare_times["check"],
            "split": bare_times["split"],
            "train": bare_times["train"] + bare_times["save_model"],
            "evaluate": bare_times["evaluate"],
            "register": 0.0,
        }
        for name in stage_names:
            own = med([m.extra["stages"][name]["wall_time_s"] for m in runs])
            span = med([m.extra["stages"][name]["span_s"] for m in runs])
            rss = max(m.extra["stages"][name]["peak_rss_mb"] for m in runs)
            label = {
                "ingest": "ingest (bare: read_csv)",
                "validate": "validate (bare: dtype coercion + checks)",
                "split": "split",
                "train": "train (bare: fit + skops dump)",
                "evaluate": "evaluate",
                "register": "register (bare: nothing)",
            }[name]
            lines.append(
                f"| stage {label}: wall_time_s {own:.1f}, run span {span:.1f}, "
                f"peak {rss:,.0f} MB | {bare_for[name]:.1f} | {span:.1f} |"
            )
        bookkeeping = med(
            [
                m.extra["pipeline"]["span_s"]
                - sum(m.extra["stages"][n]["span_s"] for n in stage_names)
                for m in runs
            ]
        )
        lines.append(f"| pipeline run bookkeeping outside the stage runs | - | {bookkeeping:.1f} |")
        lines.append(
            f"| **whole process** | **{med([m.wall_s for m in rr['bare']]):.1f}** | "
            f"**{wall:.1f}** |"
        )

    if env_notes.get("imports"):
        imp = env_notes["imports"]
        lines += [
            "",
            "Import cost alone (whole `python -c 'import ...'` process, median of 3): "
            f"bare script's imports {imp['bare']:.1f} s; the framework's CLI, runner and "
            f"stages {imp['framework']:.1f} s.",
        ]
    if env_notes.get("profile"):
        prof_rows, prof_wall, prof_rows_n = env_notes["profile"]
        lines += [
            "",
            f"### cProfile of one framework run at {prof_rows_n:,} rows "
            f"(fresh store, {prof_wall:.1f} s under the profiler)",
            "",
            "Cumulative time per function (nested: a stage function includes the validation "
            "it calls; the wrapper includes everything of its stage).",
            "",
            "| function | calls | cumulative s |",
            "|---|---:|---:|",
        ]
        for label, calls, cum in prof_rows:
            lines.append(f"| {label} | {calls} | {cum:.1f} |")
    lines += ["", END]
    return "\n".join(lines)


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

The data: `bench/run.py` `generate()`, numpy seed 20240501. It has 30 standard-normal float columns
(2 % missing), `cat_a` (5 levels) and `cat_b` (8 levels) (3 % missing), and `label` drawn from a
logistic model of 12 linear terms, one interaction, one sine and both categoricals. Written with
`%.6g` floats; the 1M-row frame is a 245 MB parquet artifact.

"""


def write_report(out: Path, body: str) -> None:
    if out.exists():
        text = out.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            out.write_text(head + body + tail, encoding="utf-8")
            return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(HEADER + body + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant and size")
    parser.add_argument(
        "--context-rows", type=int, default=100_000, help="a second, smaller size (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--no-warm", action="store_true", help="skip the runs on a pre-created store schema"
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one framework run at --rows"
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    sizes = [args.rows] + ([args.context_rows] if args.context_rows else [])
    if not args.no_warm:
        template_store()

    results: dict[int, dict[str, list[Measured]]] = {}
    for rows in sizes:
        csv = dataset(rows)
        r = results[rows] = {"bare": [], "fresh": [], "warm": []}
        for i in range(args.repeat):
            variants = ["bare", "fresh"] + ([] if args.no_warm else ["warm"])
            if i % 2:
                variants.reverse()
            for kind in variants:
                if kind == "bare":
                    m = run_bare(csv)
                else:
                    m = run_framework(csv, schema_exists=kind == "warm")
                r[kind].append(m)
                print(
                    f"{rows:>9,} rows  {kind:<5}  {m.wall_s:6.1f} s  cpu {m.cpu_s:6.1f} s  "
                    f"{m.peak_rss_mb:7,.0f} MB  load {m.load:.1f}",
                    flush=True,
                )

    notes: dict = {
        "imports": {
            "bare": import_cost("numpy, pandas, skops.io, sklearn.ensemble, sklearn.compose"),
            "framework": import_cost(
                "mlflow_pipeline.cli, mlflow_pipeline.runner, mlflow_pipeline.pipeline"
            ),
        }
    }
    if args.profile:
        prof = RESULTS / f"framework_{args.rows}.prof"
        m = run_framework(dataset(args.rows), schema_exists=False, profile=prof)
        notes["profile"] = (profile_breakdown(prof), m.wall_s, args.rows)
        print(f"profiled framework run: {m.wall_s:.1f} s ({prof})", flush=True)

    body = render(results, args, notes)
    write_report(args.out, body)
    print(body)


if __name__ == "__main__":
    main()
