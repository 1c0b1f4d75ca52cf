"""The data gates against hand-written pandas checks of the same rules, in one process.

    python bench/gates.py [--rows 1000000] [--repeat 5] [--out docs/benchmarks.md]
    python bench/run.py --gates [--rows 1000000] [--repeat 5]      (the same; make bench-gates)

1. Builds a frame as ``pd.read_csv`` returns it (checked against a CSV round trip of its first
   rows): an int64 ``id`` (distinct), 26 float64 features (2 % missing), 4 str categoricals (3 %
   missing), an int64 0/1 ``label``; and the rules of ``GATE_RULES`` on top of
   ``conf/validation/default.yaml``. The frame passes every rule. A copy with 1,000 failing
   values (250 each for in_range, finite, max_abs_value and allowed_categories) is the failing
   case.
2. Times, in this process, after one untimed warm-up of each (which also checks that the gate
   and the pandas function return the same frame, and find the same failing values): the gate,
   ``validation.check(df, schemas.gate(contract, cfg), ...)``, with the contract inferred once
   before the clock; ``pandas_gate``: the same rules in plain pandas/numpy; and ``pandas_gate``
   with a plain ``df.duplicated()`` for the duplicate-rows rule. Order rotating per repeat.
   Then the failing case (gate and pandas), and the contract's inference alone.
3. Peak memory: the gate and the pandas function once each in a new process (``--peak``): the
   peak RSS (VmHWM, reset through /proc/self/clear_refs) above the RSS after building the frame.
4. Profiles one gate call (cProfile) and sums it per part.
5. Writes between the ``bench-gates:begin`` / ``bench-gates:end`` markers of ``--out``
   (appended if absent). The package and conf/ are copied to bench/results/snapshot-gates/ and
   imported from there, as ``--cache`` does.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import gc
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from common import (
    PYTHON,
    RESULTS,
    ROOT,
    base_env,
    check_frozen,
    frozen_code,
    machine,
    med,
    publish,
    summed_calls,
)

GATES_BEGIN, GATES_END = "<!-- bench-gates:begin -->", "<!-- bench-gates:end -->"
# The gate's target on data that passes: at most this many times the pandas function's time.
GATES_TARGET = 1.5
GATES_REPEAT = 5
GATES_SNAPSHOT = "snapshot-gates"
TARGET = "label"
FLOATS = 26
LEVELS = {
    "c0": ["a", "b", "c", "d"],
    "c1": ["red", "green", "blue", "yellow", "black"],
    "c2": ["north", "south", "east", "west"],
    "c3": ["s", "m", "l", "xl", "xxl", "xxxl"],
}
RANGED = ("f00", "f01", "f02", "f03")
# The rules on top of conf/validation/default.yaml (finite, max_abs_value 1e15, null_fraction
# 0.99 per column, duplicate_rows 0.25): ranges, allowed categories, a unique id.
GATE_RULES = [
    *(f"+validation.ranges.{name}={{min: -100, max: 100}}" for name in RANGED),
    *(f"+validation.categories.{name}=[{','.join(v)}]" for name, v in LEVELS.items()),
    "validation.unique=[id]",
]
OVERRIDES = [
    "data=csv",
    "data.path=gates.csv",  # never read: the frame is built in memory
    f"data.target={TARGET}",
    "data.task=classification",
    *GATE_RULES,
]
# The failing case: this many values break each of four rules, on distinct rows.
FAILING_PER_RULE = 250
FAILING = {
    ("f00", "in_range"): 500.0,
    ("f05", "finite"): np.inf,
    ("f04", "max_abs_value"): 1e16,
    ("c0", "allowed_categories"): "z",
}


# --------------------------------------------------------------------------------------- data
def gate_frame(rows: int, seed: int = 20240502) -> pd.DataFrame:
    """``rows`` x 32 columns with the dtypes ``pd.read_csv`` gives: int64, float64, str."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, FLOATS)) * 10
    x[rng.random(x.shape) < 0.02] = np.nan
    data: dict[str, object] = {"id": np.arange(rows, dtype="int64")}
    data.update({f"f{i:02d}": x[:, i] for i in range(FLOATS)})
    for name, levels in LEVELS.items():
        picked = np.array(levels)[rng.integers(0, len(levels), rows)]
        data[name] = pd.Series(picked, dtype="str").mask(rng.random(rows) < 0.03)
    data[TARGET] = rng.integers(0, 2, rows, dtype="int64")
    return pd.DataFrame(data)


def check_like_read_csv(df: pd.DataFrame) -> None:
    """Raise unless ``pd.read_csv`` gives the same dtypes for the frame's first rows."""
    again = pd.read_csv(io.StringIO(df.head(1000).to_csv(index=False)))
    if not again.dtypes.equals(df.dtypes):
        raise RuntimeError(f"dtypes differ from read_csv's:\n{df.dtypes}\n{again.dtypes}")


def failing_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``FAILING_PER_RULE`` failing values for each rule of ``FAILING``."""
    bad = df.copy()
    rng = np.random.default_rng(7)
    rows = rng.choice(len(df), size=(len(FAILING), FAILING_PER_RULE), replace=False)
    for picked, ((column, _rule), value) in zip(rows, FAILING.items(), strict=True):
        bad.loc[picked, column] = value
    return bad


def gate_config():
    from mlflow_pipeline.config import load_config

    return load_config(OVERRIDES)


# ---------------------------------------------------------------------------------- variants
def run_gate(df: pd.DataFrame, contract, cfg) -> pd.DataFrame:
    """The validate stage's gate (without quarantine): returns the coerced frame."""
    from mlflow_pipeline import schemas
    from mlflow_pipeline.data import validation

    return validation.check(df, schemas.gate(contract, cfg), stage="validate", dataset="raw").frame


class RuleFailures(ValueError):
    """What ``pandas_gate`` found: ``{(column, rule): failing values}``."""

    def __init__(self, found: dict[tuple[str | None, str], int]) -> None:
        super().__init__(f"{len(found)} rule(s) failed: {found}")
        self.found = found


def contract_dtype(values: pd.Series, is_target: bool) -> str:
    """The dtype the inferred contract coerces a column to (classification; no text column
    here is mostly numbers)."""
    if is_target:
        if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
            return "int64"
        return "float64" if pd.api.types.is_numeric_dtype(values) else "str"
    if pd.api.types.is_bool_dtype(values):
        return "str"
    return "float64" if pd.api.types.is_numeric_dtype(values) else "str"


def pandas_gate(
    df: pd.DataFrame, cfg, columns: list[str], *, plain_duplicates: bool = False
) -> pd.DataFrame:
    """The gate's rules by hand, vectorised: the contract's columns and coercion, a non-null
    target, finite, max_abs_value, null_fraction, in_range, allowed_categories, unique,
    duplicate_rows, not empty, at least 2 classes.

    Returns the coerced frame; raises RuleFailures with every failing (column, rule) and its
    count. Repeated rows are counted by the gate's own function (``schemas.duplicate_rows``,
    plain pandas/numpy), so that both pay the same for that rule; ``plain_duplicates``: by
    ``df.duplicated()`` instead.
    """
    from mlflow_pipeline.schemas import duplicate_rows

    rules, target = cfg.validation, cfg.data.target
    found: dict[tuple[str | None, str], int] = {}

    def fail(column: str | None, rule: str, count: int) -> None:
        if count:
            found[(column, rule)] = int(count)

    if len(df) == 0:
        raise RuleFailures({(None, "not_empty"): 1})
    fail(None, "column_in_dataframe", len(set(columns) - set(df.columns)))
    fail(None, "column_in_schema", len(set(df.columns) - set(columns)))
    dtypes = {name: contract_dtype(df[name], name == target) for name in df.columns}
    out = df.astype(dtypes)
    fail(target, "not_nullable", out[target].isna().sum())
    for name, col in out.items():
        numeric = dtypes[name] in ("float64", "int64")
        if numeric:
            values = col.to_numpy()
            inf = np.isinf(values)
            if rules.finite:
                fail(name, "finite", inf.sum())
            if rules.max_abs_value is not None:
                fail(name, "max_abs_value", ((np.abs(values) > rules.max_abs_value) & ~inf).sum())
            if name in rules.ranges:
                low, high = rules.ranges[name].get("min"), rules.ranges[name].get("max")
                outside = np.zeros(len(values), dtype=bool)
                if low is not None:
                    outside |= values < low
                if high is not None:
                    outside |= values > high
                fail(name, "in_range", outside.sum())
        limit = rules.null_fractions.get(name, rules.max_null_fraction)
        if name != target and limit is not None and limit < 1.0 and col.isna().mean() > limit:
            fail(name, "null_fraction", 1)
        if name in rules.categories:
            allowed = list(rules.categories[name])
            if not numeric:
                allowed = [str(v) for v in allowed]
            fail(name, "allowed_categories", (~col.isin(allowed) & col.notna()).sum())
        if name in rules.unique:
            fail(name, "unique", (col.duplicated(keep=False) & col.notna()).sum())
    if rules.max_duplicate_fraction is not None:
        repeats = int(out.duplicated().sum()) if plain_duplicates else duplicate_rows(out)
        if repeats / len(out) > rules.max_duplicate_fraction:
            fail(None, "duplicate_rows", 1)
    if out[target].nunique(dropna=True) < 2:
        fail(None, "target classes", 1)
    if found:
        raise RuleFailures(found)
    return out


def gate_failures(df: pd.DataFrame, contract, cfg) -> dict[tuple[str | None, str], int]:
    """The gate's failing values on ``df`` per (column, rule name)."""
    from mlflow_pipeline.errors import DataValidationError

    try:
        run_gate(df, contract, cfg)
    except DataValidationError as exc:
        table = exc.failure_cases
        rule = table["check"].str.split("(").str[0].str.split(" ").str[0]
        counts = table.assign(rule=rule).groupby(["column", "rule"]).size()
        return {key: int(n) for key, n in counts.items()}
    return {}


def check_equivalent(df: pd.DataFrame, bad: pd.DataFrame, contract, cfg) -> None:
    """The untimed warm-up: the gate and the pandas function agree on both frames."""
    columns = list(contract.columns)
    pd.testing.assert_frame_equal(run_gate(df, contract, cfg), pandas_gate(df, cfg, columns))
    pandas_gate(df, cfg, columns, plain_duplicates=True)
    expected = {key: FAILING_PER_RULE for key in FAILING}
    try:
        pandas_gate(bad, cfg, columns)
        found: dict = {}
    except RuleFailures as exc:
        found = exc.found
    gate_found = gate_failures(bad, contract, cfg)
    if not (found == gate_found == expected):
        raise RuntimeError(f"failing case: gate {gate_found}, pandas {found}, built {expected}")


# -------------------------------------------------------------------------------- measuring
def timed(func: Callable[[], object], expect: str) -> dict[str, float]:
    """Wall and CPU time of one call; ``expect``: "passes" or "fails" (raises otherwise)."""
    from mlflow_pipeline.errors import DataValidationError

    gc.collect()
    load = os.getloadavg()[0]
    cpu, started = time.process_time(), time.perf_counter()
    try:
        func()
        outcome = "passes"
    except (DataValidationError, RuleFailures):
        outcome = "fails"
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if outcome != expect:
        raise RuntimeError(f"expected the call to {expect.rstrip('s')}, it {outcome.rstrip('s')}")
    return {"wall_s": wall, "cpu_s": cpu, "load": (load + os.getloadavg()[0]) / 2}


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def peak_child(variant: str, rows: int) -> dict[str, float]:
    """In a new process: the peak RSS of one call above the RSS after building its input."""
    from mlflow_pipeline import schemas

    df, cfg = gate_frame(rows), gate_config()
    contract = schemas.infer_contract(df, TARGET, "classification")
    columns = list(contract.columns)

    def call(frame: pd.DataFrame) -> object:
        if variant == "gate":
            return run_gate(frame, contract, cfg)
        return pandas_gate(frame, cfg, columns)

    call(df.head(1000))  # imports and first-call set-up, outside the peak
    gc.collect()
    try:  # hand freed heap memory back, so that the call's allocations show in the RSS
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    call(df)
    return {"peak_mb": (_status_kb("VmHWM") - before) / 1024, "rss_before_mb": before / 1024}


def peak_memory(variant: str, rows: int) -> dict[str, float] | None:
    try:
        done = subprocess.run(
            [PYTHON, __file__, "--peak", variant, "--rows", str(rows)],
            cwd=RESULTS,
            env=base_env(GATES_SNAPSHOT),
            capture_output=True,
            text=True,
            check=True,
        )
    except subprocess.CalledProcessError as exc:  # e.g. no /proc/self/clear_refs
        print(f"peak memory of {variant} not measured:\n{exc.stderr[-2000:]}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


GATE_PROFILED = [
    # (label, file suffix, function name)
    ("the whole gate (`schemas.gate` + `validation.check`)", "bench/gates.py", "run_gate"),
    ("building the gate: `schemas.gate`", "mlflow_pipeline/schemas.py", "gate"),
    ("running it: `validation.check`", "mlflow_pipeline/data/validation.py", "check"),
    ("pandera `DataFrameSchema.validate`", "pandera/api/pandas/container.py", "validate"),
    ("... copying the frame", "pandera/backends/pandas/container.py", "preprocess"),
    ("... coercion", "pandera/backends/pandas/container.py", "coerce_dtype"),
    ("... each check's input (column, dropna)", "pandera/backends/pandas/checks.py", "preprocess"),
    ("... each check's output (failure cases)", "pandera/backends/pandas/checks.py", "postprocess"),
    ("rule `finite`", "mlflow_pipeline/schemas.py", "_no_infinity"),
    ("rule `max_abs_value`", "mlflow_pipeline/schemas.py", "_within"),
    ("rule `in_range`", "mlflow_pipeline/schemas.py", "_in_range"),
    ("rule `null_fraction`", "mlflow_pipeline/schemas.py", "_null_fraction_within"),
    ("rule `allowed_categories`", "mlflow_pipeline/schemas.py", "_allowed"),
    ("rule `unique`", "mlflow_pipeline/schemas.py", "_distinct"),
    ("rule `duplicate_rows`", "mlflow_pipeline/schemas.py", "duplicate_rows"),
]


def profile_gate(df: pd.DataFrame, contract, cfg) -> list[tuple[str, int, float]]:
    profiler = cProfile.Profile()
    profiler.enable()
    run_gate(df, contract, cfg)
    profiler.disable()
    profiler.create_stats()
    return summed_calls(profiler.stats, GATE_PROFILED)  # type: ignore[attr-defined]


def time_variants(
    df: pd.DataFrame, bad: pd.DataFrame, contract, cfg, repeat: int
) -> tuple[dict[str, dict[str, list[dict]]], list[str]]:
    """Every variant ``repeat`` times, order rotating; then the contract's inference."""
    from mlflow_pipeline import schemas

    columns = list(contract.columns)
    cases: dict[str, dict[str, Callable[[], object]]] = {
        "passes": {
            "gate": lambda: run_gate(df, contract, cfg),
            "pandas": lambda: pandas_gate(df, cfg, columns),
            "pandas_plain": lambda: pandas_gate(df, cfg, columns, plain_duplicates=True),
        },
        "fails": {
            "gate": lambda: run_gate(bad, contract, cfg),
            "pandas": lambda: pandas_gate(bad, cfg, columns),
        },
    }
    results: dict[str, dict[str, list[dict]]] = {
        case: {name: [] for name in variants} for case, variants in cases.items()
    }
    results["infer"] = {"contract": []}
    order: list[str] = []
    for i in range(repeat):
        for case, variants in cases.items():
            names = list(variants)
            names = names[i % len(names) :] + names[: i % len(names)]
            for name in names:
                m = timed(variants[name], expect=case)
                results[case][name].append(m)
                order.append(f"{case}/{name}")
                print(
                    f"{i + 1}/{repeat} {case:<6} {name:<13} {m['wall_s']:6.2f} s  "
                    f"cpu {m['cpu_s']:6.2f} s  load {m['load']:.1f}",
                    flush=True,
                )
        m = timed(lambda: schemas.infer_contract(df, TARGET, "classification"), "passes")
        results["infer"]["contract"].append(m)
        print(f"{i + 1}/{repeat} infer_contract {m['wall_s']:6.2f} s", flush=True)

    return results, order


# ----------------------------------------------------------------------------------- main
def run_gates(rows: int, repeat: int, out: Path) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    snapshot, code = frozen_code(GATES_SNAPSHOT)
    check_frozen(snapshot, base_env(GATES_SNAPSHOT))
    sys.path.insert(0, str(snapshot))
    import mlflow_pipeline
    from mlflow_pipeline import schemas

    if not mlflow_pipeline.__file__.startswith(str(snapshot)):
        raise RuntimeError(f"the frozen copy is not what gets imported: {mlflow_pipeline.__file__}")
    print(f"code under test: {code} (frozen in {snapshot})", flush=True)

    started = time.perf_counter()
    df = gate_frame(rows)
    check_like_read_csv(df)
    bad = failing_frame(df)
    cfg = gate_config()
    contract = schemas.infer_contract(df, TARGET, "classification")
    print(f"{rows:,} x {df.shape[1]} frame in {time.perf_counter() - started:.1f} s", flush=True)
    check_equivalent(df, bad, contract, cfg)

    results, order = time_variants(df, bad, contract, cfg, repeat)
    notes: dict = {"code": code, "order": order, "columns": df.shape[1]}
    notes["profile"] = profile_gate(df, contract, cfg)
    del df, bad
    gc.collect()
    notes["peak"] = {variant: peak_memory(variant, rows) for variant in ("gate", "pandas")}
    print(f"peak memory: {notes['peak']}", flush=True)
    publish(
        "gates_results.json",
        {"rows": rows, "repeat": repeat, "results": results, "notes": notes},
        render_gates(results, rows, repeat, notes),
        out,
        (GATES_BEGIN, GATES_END, GATES_HEADING),
    )


GATES_HEADING = """## Data gates against plain pandas checks

`python bench/run.py --gates` (= `bench/gates.py`, `make bench-gates`) times the gate of the
validate stage (`schemas.gate` + `validation.check`: pandera) and a hand-written pandas/numpy
function applying the same rules (`pandas_gate` in `bench/gates.py`) to the same frame of
1,000,000 rows x 32 columns, in one process. The target: the gate at most 1.5x the pandas
function's time on data that passes every rule.

"""


def render_gates(results: dict, rows: int, repeat: int, notes: dict) -> str:
    """The section between GATES_BEGIN and GATES_END: data, rules, the table, every call."""

    def wall(case: str, name: str) -> float:
        return med([m["wall_s"] for m in results[case][name]])

    def cpu(case: str, name: str) -> float:
        return med([m["cpu_s"] for m in results[case][name]])

    def load(case: str) -> float:
        loads = [m["load"] for ms in results[case].values() for m in ms]
        return sum(loads) / len(loads)

    def peak(variant: str) -> str:
        found = notes["peak"].get(variant)
        return f"{found['peak_mb']:,.0f} MB" if found else "-"

    script = Path(sys.argv[0]).name
    shape = f"{rows:,} x {notes['columns']}"
    ratio = wall("passes", "gate") / wall("passes", "pandas")
    verdict = "**met**" if ratio <= GATES_TARGET else "**not met**"
    fail_ratio = wall("fails", "gate") / wall("fails", "pandas")
    lines = [
        GATES_BEGIN,
        "",
        f"_Generated by `python bench/{script} {' '.join(sys.argv[1:])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}._",
        "",
        f"**Machine:** {machine()}.",
        "",
        f"**Code under test:** {notes['code']}; copied to `bench/results/{GATES_SNAPSHOT}/` at "
        "the start and imported from there.",
        "",
        f"**Data:** {shape}, as `pd.read_csv` returns it (dtypes checked against a CSV round "
        f"trip): `id` int64 (distinct), `f00`..`f{FLOATS - 1:02d}` float64 (standard normal x 10, "
        "2 % missing), `c0`..`c3` str (4-6 levels, 3 % missing), `label` int64 0/1. It passes "
        f"every rule. The failing case: a copy with {FAILING_PER_RULE} failing values for each "
        "of " + ", ".join(f"{rule} (`{col}`)" for col, rule in FAILING) + ".",
        "",
        "**Rules:** `conf/validation/default.yaml` (finite and max_abs_value 1e15 on numeric "
        "columns, null_fraction <= 0.99 on every feature, duplicate_rows <= 0.25), the inferred "
        "contract (coercion to float64 / str / int64, columns exactly these, non-null target) "
        "and the task's checks (not empty, at least 2 classes), plus:",
        "",
        "```",
        " ".join(GATE_RULES),
        "```",
        "",
        f"**Repeats:** {repeat} per variant in one process, order rotating, after one untimed "
        "warm-up of each that also checks that the gate and the pandas function return the same "
        "frame (`assert_frame_equal`) and find the same failing values per column and rule; "
        "medians. The contract is inferred once before the clock. Peak memory: one call in a "
        "new process, its peak RSS above the RSS after building the frame.",
        "",
        "| case | rows x columns | gate median s | pandas median s | **ratio** | target | verdict "
        "| load average (1 min) | peak memory gate / pandas |",
        "|---|---|---:|---:|---:|---|---|---:|---|",
        f"| data passes every rule | {shape} | {wall('passes', 'gate'):.3f} | "
        f"{wall('passes', 'pandas'):.3f} | **{ratio:.2f}x** | <= {GATES_TARGET}x | {verdict} | "
        f"{load('passes'):.1f} | {peak('gate')} / {peak('pandas')} |",
        f"| {len(FAILING) * FAILING_PER_RULE:,} failing values | {shape} | "
        f"{wall('fails', 'gate'):.3f} | {wall('fails', 'pandas'):.3f} | {fail_ratio:.2f}x | "
        f"(reported only) | - | {load('fails'):.1f} | - |",
        "",
        f"CPU time (medians, data passes): gate {cpu('passes', 'gate'):.3f} s, pandas "
        f"{cpu('passes', 'pandas'):.3f} s ({cpu('passes', 'gate') / cpu('passes', 'pandas'):.2f}x)."
        " Both count repeated rows with `schemas.duplicate_rows` (exact, plain pandas/numpy); "
        "with a plain `df.duplicated()` instead the pandas function takes "
        f"{wall('passes', 'pandas_plain'):.3f} s (the gate is "
        f"{wall('passes', 'gate') / wall('passes', 'pandas_plain'):.2f}x that). Inferring the "
        f"contract (`schemas.infer_contract`, not part of the gate's time) takes "
        f"{wall('infer', 'contract'):.2f} s (CPU {cpu('infer', 'contract'):.2f} s).",
        "",
    ]
    lines += render_gates_raw(results, notes)
    lines += ["", GATES_END]
    return "\n".join(lines)


def render_gates_raw(results: dict, notes: dict) -> list[str]:
    """Every timed call in run order, and the profiled gate call per part."""
    lines = [
        "Raw, in run order (wall s / CPU s / 1-min load average):",
        "",
    ]
    for case in ("passes", "fails", "infer"):
        for name, ms in results[case].items():
            cells = ", ".join(f"{m['wall_s']:.3f} / {m['cpu_s']:.3f} / {m['load']:.1f}" for m in ms)
            lines.append(f"- {case}, {name}: {cells}")
    lines += [
        "",
        "One gate call on the passing data under cProfile (cumulative s; nested, the profiler "
        "slows Python-heavy parts most):",
        "",
        "| part | calls | cumulative s |",
        "|---|---:|---:|",
    ]
    for label, calls, cum in notes["profile"]:
        lines.append(f"| {label} | {calls} | {cum:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=GATES_REPEAT, help="timed calls per variant")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--peak", choices=("gate", "pandas"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak:
        print(json.dumps(peak_child(args.peak, args.rows)))
        return
    run_gates(args.rows, args.repeat, args.out)


if __name__ == "__main__":
    main()
