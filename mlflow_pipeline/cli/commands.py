"""``mlflow-pipeline <subcommand>``: one function per subcommand that is not a pipeline run.
Each parses its arguments, calls the app, prints the result; ``exit_code`` turns an expected
error into one message and exit 1 (see cli.common)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from mlflow_pipeline.cli.common import LOG_FORMAT, exit_code
from mlflow_pipeline.config import hydra_quote, load_config, setting_value
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.store.tracking import record_error

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def schema_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline schema -o FILE [overrides]`` (also ``mlflow-pipeline-schema``): infer
    the data contract of the configured data to a file."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline schema",
        description="Write the data contract inferred from the configured data as pandera YAML.",
    )
    parser.add_argument("--output", "-o", required=True, help="file to write")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=csv data.path=x")
    args = parser.parse_args(argv)
    from mlflow_pipeline.schemas import contract_to_yaml, infer_contract
    from mlflow_pipeline.stages.ingest import ingest

    def command() -> None:
        cfg = load_config(args.overrides)
        raw = ingest(cfg)["raw"]
        if cfg.data.target not in raw.columns:
            raise ConfigError(f"data.target: no column '{cfg.data.target}' in the data")
        contract = infer_contract(raw, cfg.data.target, cfg.data.task)
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(contract_to_yaml(contract))
        except OSError as exc:
            raise ConfigError(f"--output: cannot write {args.output}: {exc.strerror}") from exc
        print(f"wrote the inferred schema of {len(raw.columns)} columns to {args.output}")

    return exit_code(command)


def reproduce_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline reproduce MODEL_URI``: exit 0 when the re-run is identical."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline reproduce",
        description="Re-run the pipeline that produced a registered model version from its "
        "recorded config and data, with the cache disabled, and compare data digests, metrics "
        "and predictions on the recorded test set. Exit 0 if identical, 1 if not.",
    )
    parser.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="the store holding the model (default: $MLFLOW_TRACKING_URI, else the project's "
        "embedded store)",
    )
    _unsafe_argument(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    from mlflow_pipeline.apps.reproduce import describe, reproduce
    from mlflow_pipeline.store.tracking import resolve_tracking

    def command() -> int:
        uri = args.tracking_uri or resolve_tracking(load_config([])).uri
        report = reproduce(args.model_uri, uri, allow_unsafe=args.allow_unsafe_model)
        print(describe(report))
        return 0 if report.identical else 1

    return exit_code(command)


SCORE_EPILOG = """\
The input is held to the version's training data contract first (the target column is
optional; no unexpected columns; types coerced as in training) and every value of a
categorical feature must have been seen in its training data. The output holds the input
rows plus `prediction`, `proba_<class>` (classifiers) and `model_version`, as
comma-separated UTF-8 with a header whatever the input's separator, decimal mark and encoding;
nothing is written unless every row scores. Exit 0 on success, 1 with one message otherwise.
"""


SERVE_EPILOG = """\
Equivalent to resolving MODEL_URI to models:/NAME/VERSION, downloading it and checking that
it loads without running code (skops, trusted types only; else refused unless
--allow-unsafe-model), then serving that checked copy with MLflow's own scoring server (the
same endpoints and input formats as `mlflow models serve`), each request held to the
version's training contract first, as `score` holds a file: a row that fails gets 400 and a
one-line JSON reason naming the column and the check. If this process dies, the server goes
with it. Then:
  curl http://127.0.0.1:5001/health
  curl -X POST http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
    -d '{"dataframe_split": {"columns": ["income", "age", "plan"], "data": [[52.0, 40, "plus"]]}}'
Ctrl-C (SIGINT) or SIGTERM stops the server (exit 130 or 143); otherwise the exit code is
the server's.
"""


def _tracking_uri(given: str | None) -> str:
    from mlflow_pipeline.store.tracking import absolute_sqlite_uri, resolve_tracking

    return absolute_sqlite_uri(given) if given else resolve_tracking(load_config([])).uri


def _registry_client(given: str | None) -> MlflowClient:
    """A client for the tracking store and registry ``--tracking-uri`` (or the default) names,
    once the store is known to be usable (a server down is one line in seconds)."""
    from mlflow.tracking import MlflowClient

    from mlflow_pipeline.store.tracking import Tracking, activate

    uri = activate(Tracking(uri=_tracking_uri(given), artifact_root=None)).uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="the store holding the model (default: $MLFLOW_TRACKING_URI, else the project's "
        "embedded store)",
    )


def _unsafe_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-unsafe-model",
        action="store_true",
        help="load a model that could run code when loaded (pickle, another flavor, skops "
        "types outside the trusted list); as registry.allow_unsafe_models=true",
    )


def score_main(argv: list[str] | None = None, *, run_id: str | None = None) -> int:
    """``mlflow-pipeline score MODEL_URI --input IN.csv --output OUT.csv``; from the MLproject
    entry point ``score``, ``run_id`` is the run `mlflow run` made (it records the scoring)."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline score",
        description="Score a CSV file with a registered model version, in this process.",
        epilog=SCORE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(parser)
    _unsafe_argument(parser)
    parser.add_argument("--input", "-i", required=True, help="CSV file of rows to score")
    parser.add_argument("--output", "-o", required=True, help="CSV file to write")
    parser.add_argument(
        "--encoding",
        default=None,
        help="the input file's text encoding (latin-1, cp1252, ...); default: the one the "
        "model's training read its data in (data.read_options.encoding, else UTF-8)",
    )
    args = parser.parse_args(argv)
    from mlflow_pipeline.apps.score import describe_score, log_score_run, score

    def command() -> None:
        result = score(
            args.model_uri,
            args.input,
            args.output,
            tracking_uri=_tracking_uri(args.tracking_uri),
            allow_unsafe=args.allow_unsafe_model,
            encoding=args.encoding,
        )
        if run_id:
            log_score_run(run_id, result, args.input)
        if result.warning:
            print(f"mlflow-pipeline: warning: {result.warning}", file=sys.stderr)
        print(describe_score(result))

    def on_error(exc: BaseException) -> None:
        if run_id:
            record_error(run_id, exc)

    return exit_code(command, on_error=on_error)


def serve_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline serve MODEL_URI [--port 5001] [--host 127.0.0.1]``."""
    from mlflow_pipeline.apps.serve import DEFAULT_HOST, DEFAULT_PORT

    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline serve",
        description="Serve a registered model version over HTTP (POST /invocations) with\n"
        "MLflow's scoring server, each request checked against its training contract.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(parser)
    _unsafe_argument(parser)
    parser.add_argument("--port", "-p", type=int, default=DEFAULT_PORT, help="default: 5001")
    parser.add_argument("--host", default=DEFAULT_HOST, help="default: 127.0.0.1 (loopback)")
    args = parser.parse_args(argv)
    from mlflow_pipeline.apps.serve import serve

    return exit_code(
        lambda: serve(
            args.model_uri,
            tracking_uri=_tracking_uri(args.tracking_uri),
            host=args.host,
            port=args.port,
            allow_unsafe=args.allow_unsafe_model,
        )
    )


SIMULATE_EPILOG = """\
The data is named with Hydra overrides, as for the pipeline:
  mlflow-pipeline simulate --days 5 --shift-day 4 data.path=customers.csv data.target=label \\
    data.task=classification model=logistic_regression
(data=csv is implied.) Day n trains on its batch and the --window days before it, written to
DIR/day-<n>/data.csv, with the whole pipeline in this process (model and experiment data.name,
named after the file by default). From --shift-day on, every row of a day's data has
--shift-column moved by --shift-by standard deviations (the source changed), so the drift
check flags that day. A failed day is recorded and the next day runs. Prints the per-day table
and writes it to DIR/simulation.csv. Tracking: tracking.uri, else $MLFLOW_TRACKING_URI, else
DIR/mlflow.db. Exit 0 when every day ran (failed days included), 1 with one message otherwise.
"""

# The flags of the first `simulate` grammar, still accepted: each is one override.
SIMULATE_DEPRECATED = {
    "data": "data.path",
    "target": "data.target",
    "task": "data.task",
    "name": "data.name",
}


def simulate_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline simulate --days N [--shift-day D] data.path=F data.target=T
    data.task=K [overrides]``."""
    from mlflow_pipeline.apps.simulate import DEFAULT_SHIFT_STD, DEFAULT_WINDOW

    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline simulate",
        usage="%(prog)s --days N [options] data.path=F data.target=T data.task=K [overrides]",
        description="Simulate daily retraining on a CSV file: daily batches, a shift on "
        "purpose, drift, evaluation and promotion by the real pipeline, day by day.",
        epilog=SIMULATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--days", required=True, type=int, help="number of days")
    parser.add_argument(
        "--rows-per-day", type=int, default=None, help="default: the file in --days equal parts"
    )
    parser.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help="earlier days each day also trains on (default: 2)",
    )
    parser.add_argument("--shift-day", type=int, default=None, help="first shifted day")
    parser.add_argument("--shift-column", default=None, help="default: the first numeric feature")
    parser.add_argument(
        "--shift-by",
        type=float,
        default=DEFAULT_SHIFT_STD,
        help="standard deviations (default: 1.5)",
    )
    parser.add_argument("--workdir", default=None, help="default: ./simulation-<data.name>")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides, as for the pipeline: data.path=F data.target=T data.task=K ...",
    )
    deprecated = parser.add_argument_group("deprecated (each is the override it names)")
    for flag, key in SIMULATE_DEPRECATED.items():
        deprecated.add_argument(f"--{flag}", default=None, metavar="VALUE", help=f"{key}=VALUE")
    args = parser.parse_intermixed_args(argv)
    from mlflow_pipeline.apps.simulate import describe_day, describe_simulation, simulate

    aliased = []
    for flag, key in SIMULATE_DEPRECATED.items():
        value = getattr(args, flag)
        if value is not None:
            print(
                f"mlflow-pipeline: note: --{flag} is deprecated; use {key}={value}",
                file=sys.stderr,
            )
            aliased.append(f"{key}={hydra_quote(value)}")

    def command() -> None:
        results = simulate(
            args.days,
            [*aliased, *args.overrides],
            rows_per_day=args.rows_per_day,
            window=args.window,
            shift_day=args.shift_day,
            shift_column=args.shift_column,
            shift_by=args.shift_by,
            workdir=args.workdir,
            on_day=lambda day: print(describe_day(day, args.days), file=sys.stderr, flush=True),
        )
        print(describe_simulation(results))

    return exit_code(command)


SCHEDULE_EPILOG = """\
Every form runs the same command: the venv's absolute `mlflow-pipeline` with the overrides
(or, with --launcher mlflow-run, `mlflow run <project> --env-manager local -P hydra_options=...`),
in --workdir, with MLFLOW_TRACKING_URI pinned to the store the config resolves to now.
  cron     one crontab line (log: DIR/<name>.log); --install adds it with `crontab -`, keeping
           the other lines and replacing an earlier line of the same job
  systemd  <name>.service + <name>.timer (OnCalendar, Persistent=true); --install writes them to
           ~/.config/systemd/user/ and prints the systemctl command that enables the timer
  airflow  a DAG file (BashOperator, no catch-up, no retries); --install writes it to
           $AIRFLOW_HOME/dags (default ~/airflow/dags)
  k8s      a batch/v1 CronJob in the image of projects/k8s (concurrencyPolicy Forbid)
--output writes the file (a directory for systemd) instead of printing it. The times are the
machine's local time (its time zone is written into the Airflow DAG and the CronJob).
"""


def schedule_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline schedule ENGINE [--at HH:MM] [--install] [overrides]``."""
    from mlflow_pipeline.apps.schedule import DEFAULT_AT, ENGINES, LAUNCHERS

    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline schedule",
        description="Print (or install) what runs this pipeline daily on an existing scheduler.",
        epilog=SCHEDULE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--at", default=DEFAULT_AT, help="HH:MM, 24-hour (default: 06:00)")
    parser.add_argument("--workdir", default=None, help="where the job runs (default: here)")
    parser.add_argument("--install", action="store_true", help="cron, systemd, airflow")
    parser.add_argument("--output", "-o", default=None, help="write to this file instead")
    parser.add_argument("--name", default=None, help="job name (default: mlflow-pipeline-<model>)")
    parser.add_argument("--log", default=None, help="cron's log file (default: DIR/<name>.log)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="cli")
    parser.add_argument("--image", default=None, help="k8s: default projects/k8s's image")
    parser.add_argument("--namespace", default=None, help="k8s: default projects/k8s's namespace")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the pipeline")
    args = parser.parse_intermixed_args(argv)
    from mlflow_pipeline.apps import schedule

    def command() -> None:
        job = schedule.scheduled_job(
            args.overrides,
            at=args.at,
            workdir=args.workdir,
            launcher=args.launcher,
            name=args.name,
            log=args.log,
            # A CronJob's pods read the data inside the cluster, not here.
            check_data=args.engine != "k8s",
        )
        rendering = schedule.render(args.engine, job, image=args.image, namespace=args.namespace)
        for note in rendering.notes:
            print(f"mlflow-pipeline: note: {note}", file=sys.stderr)
        print(
            schedule.deliver(args.engine, job, rendering, install=args.install, output=args.output)
        )

    return exit_code(command)


PROMOTE_EPILOG = """\
MODEL_URI names the version to point --alias at: models:/NAME/VERSION or models:/NAME@ALIAS
(e.g. models:/NAME@challenger). The move is recorded in the model's audit trail with your user
name and --reason; moves made in the UI since the last record are recorded first (as moved
outside mlflow-pipeline). Moving the champion also moves the rollback alias to the version it
leaves (--no-rollback: not). The alias names are those the pipeline recorded on the model
(registry.*_alias; default champion, challenger, rollback). The next pipeline run compares its
challenger with the version you chose.
"""


def promote_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline promote MODEL_URI --reason TEXT [--alias A] [--no-rollback]``."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline promote",
        description="Move an alias (default: the champion) to a version by hand, audited.",
        epilog=PROMOTE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_arguments(parser)
    parser.add_argument("--reason", required=True, help="why: recorded in the audit trail")
    parser.add_argument("--alias", default=None, help="default: the champion alias")
    parser.add_argument(
        "--no-rollback",
        action="store_true",
        help="leave the rollback alias where it is when the champion moves",
    )
    args = parser.parse_args(argv)
    from mlflow_pipeline.registry.promotion import promote_by_hand

    def command() -> None:
        promotion = promote_by_hand(
            _registry_client(args.tracking_uri),
            args.model_uri,
            reason=args.reason,
            alias=args.alias,
            rollback=not args.no_rollback,
        )
        print(promotion.describe())

    return exit_code(command)


def audit_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline audit NAME [--alias A]``."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline audit",
        description="Print who or what moved the aliases of a registered model, when, why "
        "and with which scores (oldest first), the aliases now, and moves made outside "
        "mlflow-pipeline that no run has recorded yet.",
    )
    parser.add_argument("name", help="the registered model (NAME or models:/NAME)")
    parser.add_argument("--alias", default=None, help="only this alias's moves")
    parser.add_argument("--tracking-uri", default=None, help="default: as for score")
    args = parser.parse_args(argv)
    from mlflow_pipeline.registry.model_registry import audit_of

    def command() -> None:
        client = _registry_client(args.tracking_uri)
        print(audit_of(client, args.name.removeprefix("models:/"), args.alias))

    return exit_code(command)


def example_data_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline example-data FILE.csv [--rows N] [--seed S]``."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline example-data",
        description="Write the README walkthroughs' synthetic customer table (income, age, "
        "plan, target label) as a CSV file.",
    )
    parser.add_argument("path", help="the CSV file to write")
    parser.add_argument("--rows", type=int, default=1500, help="default: 1500")
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    args = parser.parse_args(argv)
    if args.rows < 20:
        parser.error("--rows must be at least 20")
    from mlflow_pipeline.data.examples import write_customers

    path = write_customers(args.path, args.rows, seed=args.seed)
    print(f"wrote {args.rows} rows (income, age, plan, label) to {path}")
    return 0


# What init takes, as the pipeline's own overrides; the flags of earlier versions still work.
INIT_SETTINGS = {"data.path": "data", "data.target": "target", "data.task": "task"}
# ... how the CSV file is read (pandas.read_csv options) and columns' roles, written into the
# project.
INIT_READ_OPTIONS = "data.read_options."
INIT_COLUMNS = "data.columns."


def init_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline init DIR [data.path=CSV data.target=COL data.task=KIND]``."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline init",
        usage="%(prog)s DIR [data.path=CSV data.target=COL data.task=classification|regression "
        "data.read_options.OPTION=VALUE data.columns.COLUMN.role=ROLE ...]",
        description="Create a project that runs at once: MLproject (main, one entry point per "
        "stage, score), conf/ (the data, an inferred contract, the pipeline with a stage of its "
        "own), src/<package>/ (that stage and a feature transformer), a smoke test, README, "
        ".gitignore and pinned requirements. Without data.path: the example customer table.",
    )
    parser.add_argument("directory", help="the new project's directory (new or empty)")
    parser.add_argument(
        "settings",
        nargs="*",
        metavar="data.KEY=VALUE",
        help="as for the pipeline: data.path (a CSV file to start from), data.target (the "
        "column to predict), data.task (classification or regression), data.read_options.OPTION "
        "(how pandas reads the file: sep, decimal, encoding, ...), data.columns.COLUMN.role "
        "(a column's role: numeric, integer, categorical, datetime, text, id or ignore); both "
        "written into the project",
    )
    deprecated = parser.add_argument_group("deprecated (each is the setting it names)")
    for key, flag in INIT_SETTINGS.items():
        deprecated.add_argument(f"--{flag}", default=None, metavar="VALUE", help=f"{key}=VALUE")
    args = parser.parse_intermixed_args(argv)
    given = {flag: getattr(args, flag) for flag in INIT_SETTINGS.values()}
    for key, flag in INIT_SETTINGS.items():
        if given[flag] is not None:
            print(f"mlflow-pipeline: note: --{flag} is deprecated; use {key}=...", file=sys.stderr)
    read_options, columns = {}, {}
    for setting in args.settings:
        key, equals, value = setting.removeprefix("+").partition("=")
        for prefix, into in ((INIT_READ_OPTIONS, read_options), (INIT_COLUMNS, columns)):
            name = key.removeprefix(prefix)
            if equals and key.startswith(prefix) and name:
                try:
                    typed = setting_value(setting)
                except ConfigError as exc:
                    parser.error(str(exc))
                if into is columns:  # data.columns.<name>.role=<role> or data.columns.<name>=<role>
                    name, typed = name.removesuffix(".role"), {"role": typed}
                into[name] = typed
                break
        else:
            if not equals or key not in INIT_SETTINGS:
                parser.error(
                    f"unknown setting {setting!r}: init takes {', '.join(INIT_SETTINGS)}, "
                    f"{INIT_READ_OPTIONS}<option> and {INIT_COLUMNS}<column>.role"
                )
            given[INIT_SETTINGS[key]] = value.strip("'\"")
    if given["task"] not in (None, "classification", "regression"):
        parser.error(f"data.task must be classification or regression, got {given['task']!r}")
    from mlflow_pipeline.apps.init import init_project

    def command() -> None:
        scaffold = init_project(args.directory, **given, read_options=read_options, columns=columns)
        print(scaffold.describe())

    return exit_code(command)


def tracking_uri_main(argv: list[str] | None = None) -> int:
    """``mlflow-pipeline tracking-uri [overrides]``: the store this project's runs go to."""
    parser = argparse.ArgumentParser(
        prog="mlflow-pipeline tracking-uri",
        description="Print the tracking URI the pipeline uses here (tracking.uri, else "
        "$MLFLOW_TRACKING_URI, else the project's own store at its root), e.g. "
        "export MLFLOW_TRACKING_URI=$(mlflow-pipeline tracking-uri) to load its models "
        "from anywhere.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for the pipeline")
    args = parser.parse_args(argv)
    from mlflow_pipeline.store.tracking import resolve_tracking

    return exit_code(lambda: print(resolve_tracking(load_config(args.overrides)).uri))


# `mlflow-pipeline <name> ...`: commands that are not a pipeline run.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "init": init_main,
    "schema": schema_main,
    "tracking-uri": tracking_uri_main,
    "reproduce": reproduce_main,
    "score": score_main,
    "serve": serve_main,
    "simulate": simulate_main,
    "schedule": schedule_main,
    "promote": promote_main,
    "audit": audit_main,
    "example-data": example_data_main,
}


def schema_entry() -> None:
    raise SystemExit(schema_main())
