"""An 8-job sweep with the basic launcher against the same sweep with joblib (2 workers).

    python bench/run.py --sweep [--sweep-rows 100000] [--repeat 1] [--out docs/benchmarks.md]

Times the sweep (a single-threaded random forest on the ``--sweep-rows`` CSV) with the basic
launcher and with ``hydra/launcher=parallel`` (joblib, 2 workers), each on a new store, order
alternating; cuts each sweep's wall time at the timestamps of its runs in the store (start-up,
the shared run, the jobs, register, exit) and writes between the ``bench-sweep:begin`` /
``bench-sweep:end`` markers (appended if absent).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from common import (
    CLI,
    RESULTS,
    SEED,
    STAGE_ORDER,
    TARGET,
    Measured,
    base_env,
    check_frozen,
    dataset,
    frozen_code,
    machine,
    measure,
    med,
    publish,
)

SWEEP_BEGIN, SWEEP_END = "<!-- bench-sweep:begin -->", "<!-- bench-sweep:end -->"
# The parallel sweep's target: at least this many times faster than the sequential one.
SWEEP_TARGET = 1.7
# Mid-size data, so that each job's fit takes seconds (on the bundled 569 rows it takes
# ~0.1 s and a job is all bookkeeping).
SWEEP_ROWS = 100_000
# One core per job: a random forest with n_jobs=1 has no threads in its fit (unlike
# HistGradientBoosting's OpenMP), so the sequential sweep uses one core and two parallel jobs
# can use two. max_depth bounds the work and the model's size whatever the swept value.
SWEEP_MODEL = (
    "model=random_forest",
    "model.n_estimators=30",
    "model.max_depth=12",
    "model.n_jobs=1",
)
SWEEP_PARAM, SWEEP_VALUES = "model.min_samples_leaf", (1, 2, 3, 4, 5, 6, 7, 8)
PARALLEL_LAUNCHER = "hydra/launcher=parallel"  # conf/hydra/launcher/parallel.yaml: joblib, 2
SWEEP_SNAPSHOT = "snapshot-sweep"
SWEEP_TAGS = (
    "pipeline.kind",
    "pipeline.sweep.role",
    "pipeline.stage",
    "pipeline.run_id",
    "pipeline.pid",
    "pipeline.cache.status",
)


# ------------------------------------------------------------------------------- measuring
def sweep_cmd(csv: Path, work: Path, *, parallel: bool) -> list[str]:
    """The 8-job sweep on ``csv``, its store and Hydra's folders under ``work``."""
    return [
        CLI,
        "-m",
        "data=csv",
        f"data.path={csv}",
        f"data.target={TARGET}",
        "data.task=classification",
        "features=standard",
        *SWEEP_MODEL,
        f"{SWEEP_PARAM}=" + ",".join(str(v) for v in SWEEP_VALUES),
        f"seed={SEED}",
        "evaluation=none",
        f"tracking.root={work}",
        f"hydra.sweep.dir={work / 'multirun'}",
        *([PARALLEL_LAUNCHER] if parallel else []),
    ]


def sweep_runs(db: Path) -> dict:
    """The sweep's runs from the store (epoch seconds): the sweep run, the shared run, every
    job (its process id and its stage runs' spans, own wall times and cache status) and the
    register run."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        runs = {
            run_uuid: {"start": start / 1000, "end": end / 1000 if end else None}
            for run_uuid, start, end in con.execute(
                "select run_uuid, start_time, end_time from runs"
            ).fetchall()
        }
        marks = ", ".join(f"'{t}'" for t in SWEEP_TAGS)
        for run_uuid, key, value in con.execute(
            f"select run_uuid, key, value from tags where key in ({marks})"
        ).fetchall():
            runs[run_uuid][key] = value
        for run_uuid, value in con.execute(
            "select run_uuid, value from latest_metrics where key = 'wall_time_s'"
        ).fetchall():
            runs[run_uuid]["wall_time_s"] = value
    finally:
        con.close()
    out: dict = {"jobs": []}
    pipelines: dict[str, dict] = {}
    for run_uuid, run in runs.items():
        kind, role = run.get("pipeline.kind"), run.get("pipeline.sweep.role")
        if kind == "sweep":
            out["sweep"] = run
        elif kind == "pipeline":
            entry = {**run, "stages": {}}
            pipelines[run_uuid] = entry
            if role == "job":
                out["jobs"].append(entry)
            else:
                out[role or "pipeline"] = entry
    for run in runs.values():
        parent = pipelines.get(run.get("pipeline.run_id", ""))
        if run.get("pipeline.kind") == "stage" and parent is not None and run["end"]:
            parent["stages"][run["pipeline.stage"]] = {
                "span_s": run["end"] - run["start"],
                "wall_time_s": run.get("wall_time_s"),
                "status": run.get("pipeline.cache.status"),
            }
    out["jobs"].sort(key=lambda job: job["start"])
    return out


def sweep_phases(m: Measured, runs: dict) -> dict[str, float]:
    """The sweep process's wall time cut at the store's timestamps (seconds)."""
    t0, t_end = m.extra["started_epoch"], m.extra["started_epoch"] + m.wall_s
    jobs = runs["jobs"]
    first_job, last_job = min(j["start"] for j in jobs), max(j["end"] for j in jobs)
    shared, register, sweep = runs["shared"], runs["register"], runs["sweep"]
    return {
        "startup": sweep["start"] - t0,
        "shared": shared["end"] - sweep["start"],
        "shared_span": shared["end"] - shared["start"],
        "jobs": last_job - shared["end"],
        "before_first_job": first_job - shared["end"],
        "after_jobs": register["end"] - last_job,
        "register_span": register["end"] - register["start"],
        "exit": t_end - register["end"],
        "job_spans": sum(j["end"] - j["start"] for j in jobs),
    }


def run_sweep_once(csv: Path, *, parallel: bool, env: dict[str, str]) -> Measured:
    """One sweep on a new store in a new working directory (removed afterwards)."""
    work = Path(tempfile.mkdtemp(prefix="sweep-", dir=RESULTS))
    try:
        started_epoch = time.time()
        m = measure(sweep_cmd(csv, work, parallel=parallel), cwd=work, env=env)
        runs = sweep_runs(work / "mlflow.db")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    jobs = runs["jobs"]
    if len(jobs) != len(SWEEP_VALUES) or "shared" not in runs or "register" not in runs:
        raise RuntimeError(f"unexpected sweep: {len(jobs)} jobs, runs {sorted(runs)}")
    for job in jobs:
        shared = {n: job["stages"][n]["status"] for n in ("ingest", "validate", "split")}
        if set(shared.values()) != {"hit"}:
            raise RuntimeError(f"a job did not reuse the shared stages: {shared}")
    m.extra = {"started_epoch": started_epoch, "runs": runs}
    m.extra["phases"] = sweep_phases(m, runs)
    return m


# ------------------------------------------------------------------------------------- run
def run_sweep(args: argparse.Namespace) -> None:
    """``--repeat`` sweeps per launcher, order alternating, then the report into ``--out``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv = dataset(args.sweep_rows)
    snapshot, code = frozen_code(SWEEP_SNAPSHOT)
    env = base_env(SWEEP_SNAPSHOT)
    check_frozen(snapshot, env)
    print(f"code under test: {code} (frozen in {snapshot})", flush=True)
    results: dict[str, list[Measured]] = {"sequential": [], "parallel": []}
    for i in range(args.repeat):
        order = ["sequential", "parallel"][:: -1 if i % 2 else 1]
        for kind in order:
            m = run_sweep_once(csv, parallel=kind == "parallel", env=env)
            results[kind].append(m)
            ph = m.extra["phases"]
            trains = [j["stages"]["train"]["span_s"] for j in m.extra["runs"]["jobs"]]
            print(
                f"{kind:<10} {m.wall_s:6.1f} s  cpu {m.cpu_s:6.1f} (sampled "
                f"{m.sampled_cpu_s:.1f}) s  load {m.load:.1f}  jobs {ph['jobs']:.1f} s  "
                f"train med {med(trains):.1f} s  startup {ph['startup']:.1f}  shared "
                f"{ph['shared']:.1f}  after {ph['after_jobs']:.1f}  exit {ph['exit']:.1f}",
                flush=True,
            )
    raw = {
        kind: [{**asdict(m), "stdout": m.stdout[-2000:], "stderr": ""} for m in ms]
        for kind, ms in results.items()
    }
    publish(
        "sweep_results.json",
        {"results": raw, "code": code},
        render_sweep(results, args, code),
        args.out,
        (SWEEP_BEGIN, SWEEP_END, SWEEP_HEADING),
    )


# --------------------------------------------------------------------------------- report
SWEEP_HEADING = """## Sweeps: sequential against parallel

`python bench/run.py --sweep` times one 8-job sweep with the basic launcher (jobs one after
another in the CLI's process) and the same sweep with `hydra/launcher=parallel` (joblib, 2
worker processes), each on a new store. The target: the parallel sweep at least 1.7x faster.

"""
KINDS = ("sequential", "parallel")
# The stages every sweep job runs (register decides once, after the sweep).
JOB_STAGES = [name for name in STAGE_ORDER if name != "register"]


def cpu(m: Measured) -> float:
    """The tree's CPU time: wait4's, unless the sampled sum saw more (workers not waited for)."""
    return max(m.cpu_s, m.sampled_cpu_s)


def _wall(results: dict[str, list[Measured]], kind: str) -> float:
    return med([m.wall_s for m in results[kind]])


def _phase(results: dict[str, list[Measured]], kind: str, name: str) -> float:
    return med([m.extra["phases"][name] for m in results[kind]])


def _per_job(results: dict[str, list[Measured]], kind: str, what: str) -> float:
    """Median over every job of every run: the job run's span, or stage ``what``'s span."""
    values = []
    for m in results[kind]:
        for job in m.extra["runs"]["jobs"]:
            if what == "job":
                values.append(job["end"] - job["start"])
            else:
                values.append(job["stages"][what]["span_s"])
    return med(values)


def render_sweep(results: dict[str, list[Measured]], args: argparse.Namespace, code: str) -> str:
    """The section between SWEEP_BEGIN and SWEEP_END: the table and the target, the phases,
    the stages per job, every run."""

    def pids(kind: str) -> str:
        counts = {
            len({j.get("pipeline.pid") for j in m.extra["runs"]["jobs"]}) for m in results[kind]
        }
        return "/".join(str(c) for c in sorted(counts))

    seq, par = _wall(results, "sequential"), _wall(results, "parallel")
    ratio = seq / par
    verdict = "**met**" if ratio >= SWEEP_TARGET else "**not met**"
    values = ",".join(str(v) for v in SWEEP_VALUES)
    lines = [
        SWEEP_BEGIN,
        "",
        f"_Generated by `python bench/run.py {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}._",
        "",
        f"**Machine:** {machine()}.",
        "",
        f"**Code under test:** {code}; copied to `bench/results/{SWEEP_SNAPSHOT}/` at the start "
        "and imported from there (PYTHONPATH, inherited by the joblib workers).",
        "",
        f"**Repeats:** {args.repeat} per variant, order alternating, each in a new working "
        "directory `<tmp>` under `bench/results/` with a new SQLite store (removed afterwards); "
        "medians shown, every run below.",
        "",
        "```",
        f"# <csv>: the {args.sweep_rows:,}-row file of the first section "
        "(bench/common.py generate())",
        ".venv/bin/mlflow-pipeline -m data=csv data.path=<csv> data.target=label \\",
        "  data.task=classification features=standard " + " ".join(SWEEP_MODEL[:2]) + " \\",
        "  " + " ".join(SWEEP_MODEL[2:]) + f" {SWEEP_PARAM}={values} \\",
        f"  seed={SEED} evaluation=none tracking.root=<tmp> hydra.sweep.dir=<tmp>/multirun",
        f"# parallel: the same + {PARALLEL_LAUNCHER}",
        "```",
        "",
        "| variant | wall s | CPU s | CPU / wall | jobs phase s | job s (median) | train s "
        "(median) | processes running jobs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in KINDS:
        c = med([cpu(m) for m in results[kind]])
        lines.append(
            f"| {kind} | {_wall(results, kind):.1f} | {c:.1f} | {c / _wall(results, kind):.2f} | "
            f"{_phase(results, kind, 'jobs'):.1f} | {_per_job(results, kind, 'job'):.1f} | "
            f"{_per_job(results, kind, 'train'):.1f} | {pids(kind)} |"
        )
    jobs_ratio = _phase(results, "sequential", "jobs") / _phase(results, "parallel", "jobs")
    fixed = seq - _phase(results, "sequential", "jobs")
    ideal = fixed + _phase(results, "sequential", "jobs") / 2
    lines += [
        "",
        f"**Target** (parallel at least {SWEEP_TARGET}x faster than sequential, whole "
        f"process): {verdict}: **{ratio:.2f}x** ({seq:.1f} s / {par:.1f} s). The jobs phase "
        f"alone: {jobs_ratio:.2f}x. If the jobs phase halved exactly and the rest stayed as "
        f"in the sequential sweep ({fixed:.1f} s), the whole would be {ideal:.1f} s: "
        f"{seq / ideal:.2f}x.",
    ]
    lines += render_sweep_phases(results)
    lines += ["", SWEEP_END]
    return "\n".join(lines)


# (label, key of sweep_phases)
SWEEP_PARTS = [
    ("start-up: imports, Hydra, store schema + experiment, until the sweep run", "startup"),
    ("sweep run to the end of the `shared` run (ingest, validate, split once)", "shared"),
    ("... of which the shared run's span", "shared_span"),
    ("jobs phase: end of the shared run to the end of the last job", "jobs"),
    (
        "... of which before the first job's run started (launcher, worker start)",
        "before_first_job",
    ),
    ("after the jobs: summary, then the `register` run of the best job", "after_jobs"),
    ("... of which the register run's span", "register_span"),
    ("exit: after the register run", "exit"),
    ("(sum of the 8 job runs' spans)", "job_spans"),
]


def render_sweep_phases(results: dict[str, list[Measured]]) -> list[str]:
    """Each sweep's time cut at its runs' timestamps, the stages per job, every run."""
    seq, par = _wall(results, "sequential"), _wall(results, "parallel")
    lines = [
        "",
        "Where each sweep's time goes, cut at the timestamps of its runs in the store (medians):",
        "",
        "| part | sequential s | parallel s |",
        "|---|---:|---:|",
    ]
    for label, name in SWEEP_PARTS:
        lines.append(
            f"| {label} | {_phase(results, 'sequential', name):.1f} | "
            f"{_phase(results, 'parallel', name):.1f} |"
        )
    lines.append(f"| **whole process** | **{seq:.1f}** | **{par:.1f}** |")
    lines += [
        "",
        "Per job (medians over every job of every run), each stage run's span; ingest, validate "
        "and split are hits of the shared run:",
        "",
        "| variant | " + " | ".join(JOB_STAGES) + " | job run |",
        "|---|" + "---:|" * (len(JOB_STAGES) + 1),
    ]
    for kind in KINDS:
        cells = [f"{_per_job(results, kind, name):.2f}" for name in JOB_STAGES]
        lines.append(
            f"| {kind} | " + " | ".join(cells) + f" | {_per_job(results, kind, 'job'):.1f} |"
        )
    lines += [
        "",
        "Raw, in run order (wall s / CPU s (wait4; psutil-sampled) / jobs phase s / 1-min load "
        "average):",
        "",
    ]
    order = sorted(
        ((m.started_at, kind, m) for kind in KINDS for m in results[kind]), key=lambda t: t[0]
    )
    for _, kind, m in order:
        trains = ", ".join(f"{j['stages']['train']['span_s']:.1f}" for j in m.extra["runs"]["jobs"])
        lines.append(
            f"- {kind}: {m.wall_s:.1f} / {m.cpu_s:.1f}; {m.sampled_cpu_s:.1f} / "
            f"{m.extra['phases']['jobs']:.1f} / {m.load:.1f}; train spans in start order: "
            f"{trains}"
        )
    return lines
