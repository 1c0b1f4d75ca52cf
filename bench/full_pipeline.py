"""The framework's full pipeline against ``bench/bare.py`` doing the same work, as processes.

    python bench/run.py [--rows 1000000] [--repeat 1] [--out docs/benchmarks.md]
                        [--context-rows 100000] [--no-warm] [--profile]

1. Generates a deterministic CSV (``common.generate``: 30 float columns with missing values, 2
   string categorical columns with missing values, a binary target that depends on them) under
   bench/results/.
2. Runs, as separate processes, ``bench/bare.py`` and ``mlflow-pipeline data=csv ...`` (the full
   pipeline including register) on a fresh SQLite store per run; also the framework on a store
   whose schema already exists (created before the clock starts), to separate the one-off
   schema creation from the per-run cost. The order alternates between repeats.
   Wall time is measured around the process (its end: when ``os.wait4`` returns, in a
   thread), CPU time is the process tree's user + sys (``os.wait4``); peak RSS is the larger of
   the exact peak of any one process (ru_maxrss) and the tree's RSS sum sampled every 250 ms
   with psutil (``common.measure``).
3. Reads each stage run's own ``wall_time_s`` / ``peak_rss_mb`` metrics from the store, and with
   ``--profile`` runs the framework once more under cProfile to split its time by function.
4. Writes the results between the ``bench:begin`` / ``bench:end`` markers of ``--out`` (the
   rest of the file is kept), or the whole file when it has no markers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    HEADER,
    MLFLOW_CLI,
    PYTHON,
    RESULTS,
    ROOT,
    SEED,
    STAGE_ORDER,
    TARGET,
    Measured,
    base_env,
    check_frozen,
    dataset,
    framework_cmd,
    frozen_code,
    machine,
    measure,
    med,
    summed_calls,
    write_section,
)

# The copy of the package every framework process imports (common.frozen_code).
SNAPSHOT = "snapshot-full"


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
# With --background: the busy-machine section.
BUSY_BEGIN, BUSY_END = "<!-- bench-busy:begin -->", "<!-- bench-busy:end -->"
# Issue 14's targets: framework / bare, fresh store, per size (quiet and busy alike).
TARGETS = {1_000_000: 1.10, 100_000: 1.5}


# ------------------------------------------------------------------------------- variants
def bare_cmd(csv: Path, *extra: str) -> list[str]:
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
        *extra,
    ]


def run_bare(csv: Path, *args: str) -> Measured:
    """One bare-script process in a new temp dir (``args``: more of its options); its own
    timings (its JSON line) in ``extra``."""
    with tempfile.TemporaryDirectory(prefix="bare-", dir=RESULTS) as tmp:
        m = measure(bare_cmd(csv, *args), cwd=Path(tmp))
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


def run_framework(
    csv: Path, *, schema_exists: bool, profile: Path | None = None, extra: tuple[str, ...] = ()
) -> Measured:
    """One framework process on a new store (``extra``: more overrides); the store's
    per-stage numbers in ``extra``."""
    with tempfile.TemporaryDirectory(prefix="framework-", dir=RESULTS) as tmp:
        work = Path(tmp)
        if schema_exists:
            shutil.copy(template_store(), work / "mlflow.db")
        env = {**base_env(SNAPSHOT), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
        cmd = [*framework_cmd(csv), *extra]
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
    ("validation (pandera, every boundary)", "mlflow_pipeline/data/validation.py", "check"),
    ("digests (io.digest)", "mlflow_pipeline/store/artifacts.py", "digest"),
    ("parquet artifacts (io.save_frame)", "mlflow_pipeline/store/artifacts.py", "save_frame"),
    ("model logging (io.log_model)", "mlflow_pipeline/store/artifacts.py", "log_model"),
    ("text artifacts (io.save_text)", "mlflow_pipeline/store/artifacts.py", "save_text"),
    ("ingest function (read_csv)", "mlflow_pipeline/stages/ingest.py", "ingest"),
    ("validate function (infer + gate)", "mlflow_pipeline/stages/validate.py", "validate_data"),
    ("split function", "mlflow_pipeline/stages/split.py", "split"),
    ("train function (fit)", "mlflow_pipeline/stages/train.py", "train"),
    ("evaluate function", "mlflow_pipeline/stages/evaluate.py", "evaluate"),
    ("register function", "mlflow_pipeline/stages/register.py", "register"),
    ("stage run wrapper (run_stage, all stages)", "mlflow_pipeline/engine/stage.py", "run_stage"),
    ("pipeline (run_pipeline)", "mlflow_pipeline/engine/runner.py", "run_pipeline"),
]


def profile_breakdown(path: Path) -> list[tuple[str, int, float]]:
    import pstats

    return summed_calls(pstats.Stats(str(path)).stats, PROFILED)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- run
def run_full_pipeline(args: argparse.Namespace) -> None:
    """Every variant at ``--rows`` (and ``--context-rows``), then the report into ``--out``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    snapshot, args.code = frozen_code(SNAPSHOT)
    check_frozen(snapshot, base_env(SNAPSHOT))
    sizes = [args.rows] + ([args.context_rows] if args.context_rows else [])
    if not args.no_warm:
        template_store()

    results: dict[int, dict[str, list[Measured]]] = {}
    for rows in sizes:
        csv = dataset(rows)
        r = results[rows] = {"bare": [], "fresh": [], "warm": [], "projects": []}
        for i in range(args.repeat):
            variants = ["bare", "fresh"] + ([] if args.no_warm else ["warm"])
            variants += ["projects"] if args.projects else []
            if i % 2:
                variants.reverse()
            for kind in variants:
                if kind == "bare":
                    m = run_bare(csv)
                else:
                    extra = ("runner=projects",) if kind == "projects" else ()
                    m = run_framework(csv, schema_exists=kind == "warm", extra=extra)
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
                "mlflow_pipeline.cli.app, mlflow_pipeline.engine.runner, "
                "mlflow_pipeline.engine.pipeline"
            ),
        }
    }
    if args.profile:
        prof = RESULTS / f"framework_{args.rows}.prof"
        m = run_framework(dataset(args.rows), schema_exists=False, profile=prof)
        notes["profile"] = (profile_breakdown(prof), m.wall_s, args.rows)
        print(f"profiled framework run: {m.wall_s:.1f} s ({prof})", flush=True)

    body = render(results, args, notes)
    if args.background:
        write_section(args.out, body, BUSY_BEGIN, BUSY_END, BUSY_HEADING)
    else:
        write_report(args.out, body)
    print(body)


# --------------------------------------------------------------------------------- report
def render(results: dict, args: argparse.Namespace, env_notes: dict) -> str:
    """The section between its markers: the table, the targets, raw runs, the breakdowns."""
    begin, end = (BUSY_BEGIN, BUSY_END) if args.background else (BEGIN, END)
    busy = (
        f", with {args.background} CPU-bound busy-loop process(es) running throughout"
        if args.background
        else ""
    )
    lines = [
        begin,
        "",
        f"_Generated by `python bench/run.py {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}._",
        "",
        f"**Machine:** {machine()}.",
        "",
        f"**Code:** {args.code} (a frozen copy every framework process imports).",
        "",
        f"**Repeats:** {args.repeat} per variant at each size, order alternating; medians shown.",
        "",
        f"**Background:** {args.background or 'none'}{busy}.",
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
    lines.append("")
    for rows, r in results.items():
        if rows not in TARGETS:
            continue
        ratio = med([m.wall_s for m in r["fresh"]]) / med([m.wall_s for m in r["bare"]])
        verdict = "**met**" if ratio <= TARGETS[rows] else "**not met**"
        lines.append(
            f"**Target** (framework within {TARGETS[rows]}x of the bare script at {rows:,} rows, "
            f"fresh store{busy}): {verdict} ({ratio:.2f}x)."
        )
    for rows, r in results.items():
        if r["projects"]:
            ratio = med([m.wall_s for m in r["projects"]]) / med([m.wall_s for m in r["bare"]])
            lines.append(
                f"**runner=projects** (every stage its own `mlflow run` entry point) at {rows:,} "
                f"rows: {med([m.wall_s for m in r['projects']]):.1f} s, **{ratio:.2f}x** bare "
                f"(target at 1,000,000 rows: 1.4x; MLflow's multistep pattern: 1.62x)."
            )
    lines += [
        "",
        "Raw measurements (wall s / CPU s / peak RSS MB / 1-min load average), in run order:",
        "",
    ]
    for rows, rr in results.items():
        for kind in ("bare", "fresh", "warm", "projects"):
            cells = ", ".join(
                f"{m.wall_s:.1f} / {m.cpu_s:.1f} / {m.peak_rss_mb:,.0f} / {m.load:.1f}"
                for m in rr[kind]
            )
            if cells:
                lines.append(f"- {rows:,} rows, {kind}: {cells}")
    for rows, rr in results.items():
        lines += render_breakdown(rows, rr)
    lines += render_notes(env_notes)
    lines += ["", end]
    return "\n".join(lines)


# What the bare script does in place of each stage (its label in the breakdown).
STAGE_LABELS = {
    "ingest": "ingest (bare: read_csv)",
    "profile": "profile (bare: nothing)",
    "validate": "validate (bare: dtype coercion + checks)",
    "split": "split",
    "train": "train (bare: fit + skops dump)",
    "evaluate": "evaluate",
    "register": "register (bare: nothing)",
}


def render_breakdown(rows: int, rr: dict[str, list[Measured]]) -> list[str]:
    """Where the time goes at ``rows`` rows: the bare script's parts against the stages."""
    bare_times = {
        k: med([m.extra["times"][k] for m in rr["bare"]]) for k in rr["bare"][0].extra["times"]
    }
    runs = rr["fresh"] + rr["warm"]
    stage_names = [s for s in STAGE_ORDER if s in runs[0].extra["stages"]]
    lines = [
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
        "profile": 0.0,
        "register": 0.0,
    }
    for name in stage_names:
        own = med([m.extra["stages"][name]["wall_time_s"] for m in runs])
        span = med([m.extra["stages"][name]["span_s"] for m in runs])
        rss = max(m.extra["stages"][name]["peak_rss_mb"] for m in runs)
        lines.append(
            f"| stage {STAGE_LABELS[name]}: wall_time_s {own:.1f}, run span {span:.1f}, "
            f"peak {rss:,.0f} MB | {bare_for[name]:.1f} | {span:.1f} |"
        )
    bookkeeping = med(
        [
            m.extra["pipeline"]["span_s"] - sum(m.extra["stages"][n]["span_s"] for n in stage_names)
            for m in runs
        ]
    )
    lines.append(f"| pipeline run bookkeeping outside the stage runs | - | {bookkeeping:.1f} |")
    lines.append(
        f"| **whole process** | **{med([m.wall_s for m in rr['bare']]):.1f}** | **{wall:.1f}** |"
    )
    return lines


def render_notes(env_notes: dict) -> list[str]:
    """The import cost and, with ``--profile``, the cProfile table."""
    lines: list[str] = []
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
    return lines


BUSY_HEADING = """## The full pipeline on a busy machine

The same benchmark with ``--background N``: N CPU-bound busy-loop processes run during both
variants, as one other job on the machine would.

"""


def write_report(out: Path, body: str) -> None:
    """Replace the text between BEGIN and END in ``out``; without them, write the whole file
    (HEADER and ``body``)."""
    if out.exists():
        text = out.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            out.write_text(head + body + tail, encoding="utf-8")
            return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(HEADER + body + "\n", encoding="utf-8")
