"""A daily-retraining scenario on one CSV file: the file cut into daily batches, each day's
training data (that day's batch and the days before it) run through the real pipeline, with a
shift introduced on purpose from one day on; what drift and promotion did, day by day.

The simulation never moves an alias itself: every decision is the register stage's.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import hydra_quote, load_config, promotion_metric
from mlflow_pipeline.engine.result import PipelineResult
from mlflow_pipeline.engine.runner import run_pipeline
from mlflow_pipeline.errors import ConfigError, PipelineError
from mlflow_pipeline.store.tracking import activate, resolve_tracking
from mlflow_pipeline.tags import MLflow, Runs

DEFAULT_WINDOW = 2
DEFAULT_SHIFT_STD = 1.5
TABLE_FILE = "simulation.csv"
DATA_FILE = "data.csv"
# What points at the source file: every day points at its own file instead (its name, target
# and task are the source's).
SOURCE_KEYS = ("data", "data.path", "data.name", "data.target", "data.task")
# How the source file is read; the day files are written as plain CSV and read without them.
READ_OPTIONS_KEY = "data.read_options"
NO_SCORE = "-"


@dataclass(frozen=True)
class Shift:
    """From ``day`` on, ``column`` is moved by ``by_std`` of its standard deviations
    (``amount`` in the column's own units)."""

    day: int
    column: str
    by_std: float
    amount: float


@dataclass(frozen=True)
class DayResult:
    """One simulated day: its data, the drift check, the evaluation and the promotion decision.

    ``drift`` is ``yes``, ``no``, ``not checked``, or ``-`` when the day failed before the
    profile stage; ``decision`` is ``promoted``, ``kept vN`` or ``failed: <message>``.
    """

    day: int
    rows: int
    shifted: bool
    drift: str
    drifted: tuple[str, ...]
    metric: str
    challenger_score: float | None
    champion_score: float | None
    version: str | None
    decision: str
    champion_after: str | None
    reason: str
    pipeline_run_id: str | None
    data: str

    @property
    def failed(self) -> bool:
        return self.decision.startswith("failed")


# ---- the data of each day (pure) ---------------------------------------------------------------


def daily_batches(
    df: pd.DataFrame, days: int, *, rows_per_day: int | None = None, seed: int | None = None
) -> list[pd.DataFrame]:
    """``df`` shuffled with ``seed`` (deterministic; ``None`` is not), then cut into ``days``
    consecutive batches of ``rows_per_day`` rows (default: ``days`` equal chunks, sizes
    differing by at most one; rows left over are not used).

    Raises ConfigError when there are not enough rows.
    """
    if days < 1:
        raise ConfigError(f"--days must be at least 1, got {days}")
    if rows_per_day is not None and rows_per_day < 1:
        raise ConfigError(f"--rows-per-day must be at least 1, got {rows_per_day}")
    needed = days * (rows_per_day or 1)
    if needed > len(df):
        per_day = f"{rows_per_day} row(s) a day" if rows_per_day else "one row a day"
        raise ConfigError(f"{days} day(s) of {per_day} need {needed} rows; the data has {len(df)}")
    order = np.random.default_rng(seed).permutation(len(df))
    shuffled = df.iloc[order].reset_index(drop=True)
    if rows_per_day is None:
        chunks = np.array_split(np.arange(len(df)), days)
    else:
        chunks = [np.arange(i * rows_per_day, (i + 1) * rows_per_day) for i in range(days)]
    return [shuffled.iloc[chunk].reset_index(drop=True) for chunk in chunks]


def window_rows(batches: Sequence[pd.DataFrame], day: int, window: int) -> pd.DataFrame:
    """Day ``day``'s training data (days count from 1): the batches of the ``window`` days
    before it and its own, oldest first."""
    if not 1 <= day <= len(batches):
        raise ValueError(f"day {day} is not one of the {len(batches)} day(s)")
    if window < 0:
        raise ConfigError(f"--window must be 0 or more, got {window}")
    first = max(0, day - 1 - window)
    return pd.concat(batches[first:day], ignore_index=True)


def shift_column_of(df: pd.DataFrame, target: str, ignore: Sequence[str] = ()) -> str:
    """The default column to shift: the first numeric feature. Raises ConfigError if none."""
    for name in df.columns:
        if name != target and name not in ignore and _is_numeric(df[name]):
            return str(name)
    raise ConfigError(
        "--shift-day: the data has no numeric feature to shift (name one with --shift-column)"
    )


def make_shift(df: pd.DataFrame, day: int, column: str, by_std: float, *, target: str) -> Shift:
    """The shift of ``column`` by ``by_std`` standard deviations of it in ``df`` (the whole
    source file). Raises ConfigError for a column that is missing, the target, not numeric,
    or constant."""
    if column not in df.columns:
        raise ConfigError(f"--shift-column: no column '{column}' in the data")
    if column == target:
        raise ConfigError(f"--shift-column: '{column}' is the target; shift a feature")
    if not _is_numeric(df[column]):
        raise ConfigError(
            f"--shift-column: '{column}' is not numeric ({df[column].dtype}); a shift in "
            "standard deviations needs numbers"
        )
    std = float(df[column].std(skipna=True, ddof=1))
    if not np.isfinite(std) or std == 0:
        raise ConfigError(f"--shift-column: '{column}' has no spread (std {std}); nothing to shift")
    return Shift(day=day, column=column, by_std=by_std, amount=by_std * std)


def shifted(df: pd.DataFrame, shift: Shift) -> pd.DataFrame:
    """A copy of ``df`` with ``shift.column`` moved by ``shift.amount`` (missing values stay
    missing)."""
    out = df.copy()
    out[shift.column] = out[shift.column].astype("float64") + shift.amount
    return out


def day_data(
    batches: Sequence[pd.DataFrame], day: int, window: int, shift: Shift | None
) -> pd.DataFrame:
    """What day ``day`` trains on: its window of batches; from ``shift.day`` on, every row of
    it shifted, the earlier days' rows included: the source itself changed (a unit, a sensor,
    a feature's definition), so that day's extract carries the change throughout."""
    rows = window_rows(batches, day, window)
    if shift is not None and day >= shift.day:
        rows = shifted(rows, shift)
    return rows


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


# ---- the table (pure) ----------------------------------------------------------------------


def drift_cell(result: DayResult) -> str:
    if result.drift == "yes" and result.drifted:
        return f"yes: {', '.join(result.drifted)}"
    return result.drift


def render_table(results: Sequence[DayResult]) -> str:
    """The per-day table as aligned text: day, rows, drift, version registered, both scores
    on the promotion metric, the champion after the day, the decision."""
    metric = results[0].metric if results else "score"
    header = (
        "day",
        "rows",
        "drift",
        "version",
        f"challenger {metric}",
        f"champion {metric}",
        "champion after",
        "decision",
    )
    rows = [
        (
            str(r.day),
            str(r.rows),
            drift_cell(r),
            f"v{r.version}" if r.version else NO_SCORE,
            _score(r.challenger_score),
            _score(r.champion_score),
            f"v{r.champion_after}" if r.champion_after else "none",
            r.decision.splitlines()[0] if r.decision else "",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    # Numbers right-aligned, text left-aligned; the last column is not padded.
    right = {0, 1, 4, 5}

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        padded[-1] = cells[-1]
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


def write_table(results: Sequence[DayResult], path: Path) -> Path:
    """The per-day results as CSV (every field of DayResult; drifted features ``;``-joined)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(DayResult)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for result in results:
            row = asdict(result)
            row["drifted"] = ";".join(result.drifted)
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def _score(value: float | None) -> str:
    return NO_SCORE if value is None else f"{value:.4f}"


# ---- running the days ----------------------------------------------------------------------


def simulate(
    days: int,
    overrides: Sequence[str] = (),
    *,
    rows_per_day: int | None = None,
    window: int = DEFAULT_WINDOW,
    shift_day: int | None = None,
    shift_column: str | None = None,
    shift_by: float = DEFAULT_SHIFT_STD,
    workdir: str | Path | None = None,
    on_day: Callable[[DayResult], None] | None = None,
) -> list[DayResult]:
    """Simulate ``days`` days of retraining on the CSV file the Hydra ``overrides`` name, as
    for the pipeline: ``data.path=F data.target=T data.task=K`` (``data=csv`` unless they
    choose a data option), and any other override (``model=...``).

    The file (read with the user's ``data.read_options``) is shuffled with the config's
    ``seed`` and cut into daily batches (``daily_batches``). Day n writes
    ``<workdir>/day-<n>/data.csv`` (``day_data``: its batch and the ``window`` days before, with
    the shift from ``shift_day`` on) and runs the whole pipeline on it in this process, as
    model and experiment ``data.name`` (default: named after the file), with the tracking
    store in ``workdir`` (default ``./simulation-<name>``) unless ``tracking.uri`` or
    ``$MLFLOW_TRACKING_URI`` says otherwise; then ``on_day`` is called with its result. A day
    that fails with an expected error is recorded as failed and the next day runs. The table
    is written to ``<workdir>/simulation.csv``. Like ``run_pipeline``, it points this process
    at the tracking store it uses.

    Returns one DayResult per day. Raises ConfigError for bad options or overrides (no CSV
    file, a target that is not one of its columns), or when the model already has versions
    (a simulation starts from an empty registry), DataError when the file cannot be read.
    """
    _check_options(days, window, shift_day, shift_column)
    given = _with_data_option(overrides)
    name = str(load_config(given).data.name)
    workdir = Path(workdir or f"simulation-{name}").resolve()
    source_cfg, raw = _read_source([f"tracking.root={hydra_quote(str(workdir))}", *given])
    target = str(source_cfg.data.target)
    shift = None
    if shift_day is not None:
        column = shift_column or shift_column_of(raw, target, source_cfg.data.ignore_columns)
        shift = make_shift(raw, shift_day, column, shift_by, target=target)
    scenario = _Scenario(
        workdir=workdir,
        overrides=_day_overrides(source_cfg, workdir, given),
        batches=daily_batches(raw, days, rows_per_day=rows_per_day, seed=source_cfg.seed),
        window=window,
        shift=shift,
        metric=promotion_metric(source_cfg)[0],
    )
    client = _empty_store(source_cfg)
    results: list[DayResult] = []
    for day in range(1, days + 1):
        results.append(_run_day(client, scenario, day))
        if on_day is not None:
            on_day(results[-1])
    write_table(results, workdir / TABLE_FILE)
    return results


@dataclass(frozen=True)
class _Scenario:
    """What every simulated day shares."""

    workdir: Path
    overrides: list[str]  # every day's overrides, less the day's own data.path
    batches: list[pd.DataFrame]
    window: int
    shift: Shift | None
    metric: str


def _check_options(days: int, window: int, shift_day: int | None, shift_column: str | None) -> None:
    """Raises ConfigError for inconsistent options."""
    if shift_day is None and shift_column is not None:
        raise ConfigError("--shift-column needs --shift-day (the first shifted day)")
    if shift_day is not None and not 1 <= shift_day <= days:
        raise ConfigError(f"--shift-day must be one of the days 1..{days}, got {shift_day}")
    if window < 0:
        raise ConfigError(f"--window must be 0 or more, got {window}")


def _with_data_option(overrides: Sequence[str]) -> list[str]:
    """The user's overrides, with ``data=csv`` first unless they choose a data option: a
    simulation replays a CSV file."""
    chosen = any(_key(o) == "data" for o in overrides)
    return list(overrides) if chosen else ["data=csv", *overrides]


def _day_overrides(source_cfg: DictConfig, workdir: Path, given: Sequence[str]) -> list[str]:
    """Every day's overrides: the user's, less what points at the source file (its data
    option, path, name, target, task and read options), then the source's name, target and
    task, and the store in ``workdir``; the day adds its own ``data.path``."""
    kept = [
        o for o in given if _key(o) not in SOURCE_KEYS and not _key(o).startswith(READ_OPTIONS_KEY)
    ]
    data = OmegaConf.to_container(source_cfg.data, resolve=True, enum_to_str=True)
    return [
        "data=csv",
        f"tracking.root={hydra_quote(str(workdir))}",
        *kept,
        f"data.name={hydra_quote(str(data['name']))}",
        f"data.target={hydra_quote(str(data['target']))}",
        f"data.task={data['task']}",
    ]


def _read_source(overrides: list[str]) -> tuple[DictConfig, pd.DataFrame]:
    """The source file's config and its rows, read as the ingest stage reads them.

    Raises ConfigError when the data is not a CSV file or ``data.target`` is not one of its
    columns.
    """
    from mlflow_pipeline.stages.ingest import ingest

    source_cfg = load_config(overrides)
    if source_cfg.data.source != "csv":
        raise ConfigError(
            f"data={source_cfg.data.name}: simulate replays a CSV file; give "
            "data.path=FILE data.target=COLUMN data.task=classification|regression"
        )
    raw = ingest(source_cfg)["raw"]
    target = str(source_cfg.data.target)
    if target not in raw.columns:
        raise ConfigError(f"data.target: no column '{target}' in {source_cfg.data.path}")
    return source_cfg, raw


def _empty_store(source_cfg: DictConfig) -> MlflowClient:
    """Point this process at the simulation's tracking store and check that its model has no
    versions yet."""
    tracking = resolve_tracking(source_cfg)
    activate(tracking)
    client = MlflowClient()
    _check_registry_empty(client, source_cfg.registry.model_name, tracking.uri)
    return client


def _run_day(client: MlflowClient, scenario: _Scenario, day: int) -> DayResult:
    """Write day ``day``'s data, run the pipeline on it in this process and say what happened;
    a day that fails with an expected error is a failed DayResult, not an exception."""
    path = scenario.workdir / f"day-{day}" / DATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = day_data(scenario.batches, day, scenario.window, scenario.shift)
    rows.to_csv(path, index=False)
    overrides = [*scenario.overrides, f"data.path={hydra_quote(str(path))}"]
    cfg = load_config(overrides)
    facts = {
        "day": day,
        "rows": len(rows),
        "shifted": scenario.shift is not None and day >= scenario.shift.day,
        "metric": scenario.metric,
        "data": str(path),
    }
    started_ms = int(time.time() * 1000)
    try:
        result = run_pipeline(cfg, overrides)
    except (PipelineError, MlflowException) as exc:
        message = exc.message if isinstance(exc, MlflowException) else str(exc)
        return _failed_day(client, cfg, started_ms, message, scenario.metric, facts)
    return _finished_day(client, cfg, result, facts)


def _key(override: str) -> str:
    """The config key an override sets (``+a.b=c`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~").strip()


def _check_registry_empty(client: MlflowClient, model_name: str, uri: str) -> None:
    """A simulation starts with no champion: refuse a model that already has versions."""
    try:
        found = client.search_model_versions(f"name='{model_name}'", max_results=1)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise
    if found:
        raise ConfigError(
            f"registered model '{model_name}' already has versions in {uri}: a simulation "
            "starts from an empty registry; use a new --workdir (its own store) or another "
            "data.name"
        )


def _finished_day(
    client: MlflowClient, cfg: DictConfig, result: PipelineResult, facts: dict[str, Any]
) -> DayResult:
    drift, drifted = _drift_of(result.drift)
    promo = result.promotion or {}
    register = result.decisions.get("register")
    version = promo.get("version")
    champion_after = promo.get("champion_version_after")
    reason = str(promo.get("reason", ""))
    if not promo:  # register was not among the steps
        decision = "nothing registered (register did not run)"
        champion_after = _champion(client, cfg)
    elif register is not None and register.hit:
        version = None
        champion_after = _champion(client, cfg)
        decision = f"kept v{champion_after}" if champion_after else "nothing registered"
        reason = f"register reused run {register.source_run_id}: nothing registered"
        decision += f" ({reason})"
    elif promo["promote"]:
        decision = "promoted"
        if promo.get("champion_score") is None:
            decision += f" ({reason})"
    else:
        decision = f"kept v{promo.get('champion_version')}"
        if promo.get("champion_score") is None:
            decision += f" ({reason})"
    return DayResult(
        **facts,
        drift=drift,
        drifted=drifted,
        challenger_score=_float(promo.get("challenger_score")),
        champion_score=_float(promo.get("champion_score")),
        version=str(version) if version is not None else None,
        decision=decision,
        champion_after=str(champion_after) if champion_after is not None else None,
        reason=reason,
        pipeline_run_id=result.pipeline_run_id,
    )


def _failed_day(
    client: MlflowClient,
    cfg: DictConfig,
    started_ms: int,
    message: str,
    metric: str,
    facts: dict[str, Any],
) -> DayResult:
    """What a failed day's runs still tell: its drift (tagged on the pipeline run whenever
    profile ran) and the challenger's score (when evaluate ran)."""
    run = _pipeline_run_since(client, cfg.tracking.experiment_name, started_ms)
    drift, drifted, score = "-", (), None
    if run is not None:
        status = run.data.tags.get(Runs.DRIFT)
        if status is not None:
            drift = {"detected": "yes", "none": "no"}.get(status, status)
            drifted = tuple(n for n in run.data.tags.get(Runs.DRIFTED, "").split(",") if n)
        score = _evaluate_score(client, run, metric)
    return DayResult(
        **facts,
        drift=drift,
        drifted=drifted,
        challenger_score=score,
        champion_score=None,
        version=None,
        decision=f"failed: {message}",
        champion_after=_champion(client, cfg),
        reason=message,
        pipeline_run_id=run.info.run_id if run is not None else None,
    )


def _pipeline_run_since(client: MlflowClient, experiment: str, started_ms: int) -> Run | None:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        f"tags.`{Runs.KIND}` = 'pipeline' and attributes.start_time >= {started_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _evaluate_score(client: MlflowClient, pipeline_run: Run, metric: str) -> float | None:
    runs = client.search_runs(
        [pipeline_run.info.experiment_id],
        f"tags.`{MLflow.PARENT}` = '{pipeline_run.info.run_id}' "
        f"and tags.`{Runs.STAGE}` = 'evaluate'",
        max_results=1,
    )
    return _float(runs[0].data.metrics.get(metric)) if runs else None


def _champion(client: MlflowClient, cfg: DictConfig) -> str | None:
    try:
        version = client.get_model_version_by_alias(
            cfg.registry.model_name, cfg.registry.champion_alias
        )
    except MlflowException:
        return None
    return str(version.version)


def _drift_of(result: dict[str, Any] | None) -> tuple[str, tuple[str, ...]]:
    if result is None:
        return "-", ()
    if not result.get("checked"):
        return "not checked", ()
    if result.get("detected"):
        return "yes", tuple(result.get("drifted", []))
    return "no", ()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def describe_day(result: DayResult, days: int) -> str:
    """One progress line for the terminal."""
    version = f", registered v{result.version}" if result.version else ""
    return (
        f"day {result.day}/{days}: {result.rows} row(s), drift {drift_cell(result)}{version}: "
        f"{result.decision.splitlines()[0]}"
    )


def describe_simulation(results: Sequence[DayResult]) -> str:
    """The table, then where it was written and who is champion at the end."""
    if not results:
        return render_table(results)
    table = Path(results[-1].data).parent.parent / TABLE_FILE
    champion = f"v{results[-1].champion_after}" if results[-1].champion_after else "none"
    failed = sum(r.failed for r in results)
    return (
        f"{render_table(results)}\n"
        f"{len(results)} day(s), {failed} failed; champion after day {results[-1].day}: "
        f"{champion}; table written to {table}"
    )
