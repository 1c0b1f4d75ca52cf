"""Run the pipeline daily on a scheduler that already exists: a crontab line, a systemd user
timer, an Airflow DAG or a Kubernetes CronJob. All four are rendered from one ScheduledJob (the
same command line, working directory, environment and time), so they run the same pipeline.

The config is composed and checked when the schedule is made, not at 6 am, and so is the data
(the file exists, its header names the target), before anything is written or installed. The
tracking URI it resolves to is pinned in the job's environment, so the scheduled run writes to
the same store whatever the scheduler's own environment holds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import PROJECT_ROOT, hydra_quote, load_config
from mlflow_pipeline.errors import ConfigError, DataError, PipelineError
from mlflow_pipeline.redaction import redact_url, redact_value
from mlflow_pipeline.store.tracking import resolve_tracking
from mlflow_pipeline.tags import Env

ENGINES = ("cron", "systemd", "airflow", "k8s")
# cli: the venv's `mlflow-pipeline`; mlflow-run: `mlflow run <project> --env-manager local`.
LAUNCHERS = ("cli", "mlflow-run")
DEFAULT_AT = "06:00"
# Ends our crontab line (a shell comment there): finds the line again to replace, not repeat.
CRON_MARKER = "# mlflow-pipeline job "
# What a scheduler's bare environment lacks: the venv first (`python` in MLproject commands).
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
K8S_PROJECT = PROJECT_ROOT / "projects" / "k8s"
# Where projects/k8s/Dockerfile puts the project inside the image.
IMAGE_PROJECT_DIR = "/opt/mlflow-pipeline"
# The Kubernetes Secret (key `webhook`) a CronJob reads the alert webhook from, when it exists.
K8S_ALERT_SECRET = "mlflow-pipeline-alerts"
TIMEOUT_S = 30


class ScheduleError(PipelineError):
    """A schedule cannot be made or installed (no crontab, an unwritable directory)."""


@dataclass(frozen=True)
class ScheduledJob:
    """What every scheduler runs: one command, in one directory, with one environment, daily
    at ``hour:minute`` in ``timezone`` (the machine's own zone: cron and systemd use it)."""

    name: str
    hour: int
    minute: int
    workdir: Path
    overrides: tuple[str, ...]
    launcher: str
    tracking_uri: str
    experiment_name: str
    model_name: str
    timezone: str
    log: Path
    bin_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def holds_secret(self) -> bool:
        """Does its environment hold a secret (the alert webhook)?"""
        return Env.ALERT_WEBHOOK in self.env

    @property
    def cron(self) -> str:
        """The five cron fields: minute, hour, every day of every month, any weekday."""
        return f"{self.minute} {self.hour} * * *"

    @property
    def at(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"

    @property
    def argv(self) -> list[str]:
        """The command, with the venv's absolute paths."""
        if self.launcher == "mlflow-run":
            return mlflow_run_argv(str(self.bin_dir / "mlflow"), str(PROJECT_ROOT), self)
        return [str(self.bin_dir / "mlflow-pipeline"), *self.overrides]

    def shell_command(self, *, with_env: bool = True) -> str:
        """``cd DIR && VAR=... <command>``: the command as one POSIX shell line (without the
        variables when the scheduler sets them itself)."""
        env = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items()) if with_env else ""
        return f"cd {shlex.quote(str(self.workdir))} && {env}{shlex.join(self.argv)}"


@dataclass
class Rendering:
    """What ``render`` made: the text to print, the files it stands for, notes for the user."""

    text: str
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)
    # The files hold a secret (the alert webhook): written readable by their owner only.
    secret: bool = False


def mlflow_run_argv(mlflow: str, project: str, job: ScheduledJob) -> list[str]:
    """``mlflow run <project> --env-manager local`` with the overrides as ``hydra_options``."""
    options = " ".join(_hydra_option(o) for o in job.overrides)
    argv = [mlflow, "run", project, "--env-manager", "local"]
    argv += ["--experiment-name", job.experiment_name]
    return argv + ["-P", f"hydra_options={options}"] if options else argv


def _hydra_option(override: str) -> str:
    """An override as one word of ``hydra_options``, which is split on whitespace outside
    quotes: a dict or list value loses that whitespace (``{min: 0}`` -> ``{min:0}``, the same
    to Hydra), any other value with unquoted whitespace is quoted (a path with spaces)."""
    key, sep, value = override.partition("=")
    if not sep or not re.search(r"\s", value):
        return override
    if value.lstrip().startswith(("{", "[")):
        return f"{key}={_without_unquoted_whitespace(value)}"
    if not re.search(r"['\"]", value):
        return f"{key}={hydra_quote(value)}"
    return override


def _without_unquoted_whitespace(text: str) -> str:
    kept, quote = [], None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char.isspace():
            continue
        kept.append(char)
    return "".join(kept)


def parse_at(at: str) -> tuple[int, int]:
    """``HH:MM`` (24 h) -> ``(hour, minute)``. Raises ConfigError."""
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at.strip())
    if not match:
        raise ConfigError(f"--at {at!r}: expected HH:MM, 24-hour (e.g. 06:30)")
    return int(match.group(1)), int(match.group(2))


def local_timezone() -> str:
    """The machine's IANA time zone (cron and systemd run in it), else ``UTC``."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if "/" in tz or tz == "UTC":
        return tz
    with contextlib.suppress(OSError):
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    with contextlib.suppress(OSError):
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
        if name:
            return name
    return "UTC"


def job_name(model_name: str) -> str:
    """``mlflow-pipeline-<model>`` as a DNS-1123 label of at most 52 characters (a CronJob's
    limit), also valid as a systemd unit, an Airflow DAG id and a file name."""
    slug = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-") or "pipeline"
    return f"mlflow-pipeline-{slug}"[:52].rstrip("-")


def scheduled_job(
    overrides: list[str] | tuple[str, ...] = (),
    *,
    at: str = DEFAULT_AT,
    workdir: str | Path | None = None,
    launcher: str = "cli",
    name: str | None = None,
    log: str | Path | None = None,
    check_data: bool = True,
) -> ScheduledJob:
    """The daily job for the pipeline composed from ``overrides``.

    The config is composed in ``workdir`` (default: the current directory), where the job
    will run, so relative paths mean the same now and then; with ``check_data`` the data file
    must exist there and hold the target column (``check_data_source``). Raises ConfigError
    for a bad config, time, directory or launcher, DataError for data the job could not read.
    """
    hour, minute = parse_at(at)
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r} is not one of {', '.join(LAUNCHERS)}")
    webhooks = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "alerts.webhook"]
    if webhooks:  # a job's command line is kept in plain text: crontab, unit, manifest
        raise ConfigError(
            "alerts.webhook: a webhook URL is a secret, which the job's command line would keep "
            f"in plain text; set ${Env.ALERT_WEBHOOK} instead (the job gets it in its "
            f"environment; Kubernetes: from the Secret {K8S_ALERT_SECRET})"
        )
    check_no_secret_overrides(overrides)
    workdir = Path(workdir or Path.cwd()).expanduser().absolute()
    if not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir}: no such directory")
    with contextlib.chdir(workdir):
        cfg = load_config(list(overrides))
        if check_data:
            check_data_source(cfg)
        tracking_uri = resolve_tracking(cfg).uri
    where = "tracking.uri" if cfg.tracking.uri else f"${Env.TRACKING_URI}"
    check_no_password(tracking_uri, where)
    name = name or job_name(str(cfg.registry.model_name))
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?", name):
        raise ConfigError(f"--name {name!r}: use lowercase letters, digits and '-' (52 at most)")
    bin_dir = Path(sys.executable).absolute().parent
    tool = "mlflow" if launcher == "mlflow-run" else "mlflow-pipeline"
    if not (bin_dir / tool).exists():
        raise ConfigError(f"{bin_dir / tool} not found: run this from the project's venv")
    if launcher == "mlflow-run" and not (PROJECT_ROOT / "MLproject").is_file():
        raise ConfigError(
            f"--launcher mlflow-run: {PROJECT_ROOT} has no MLproject, so `mlflow run` would fail "
            "at every run; schedule from a project (mlflow-pipeline init) or use --launcher cli"
        )
    env = {Env.TRACKING_URI: tracking_uri, "PATH": f"{bin_dir}:{SYSTEM_PATH}"}
    if os.environ.get(Env.ALERT_WEBHOOK):
        env[Env.ALERT_WEBHOOK] = os.environ[Env.ALERT_WEBHOOK]
    return ScheduledJob(
        name=name,
        hour=hour,
        minute=minute,
        workdir=workdir,
        overrides=tuple(overrides),
        launcher=launcher,
        tracking_uri=tracking_uri,
        experiment_name=str(cfg.tracking.experiment_name),
        model_name=str(cfg.registry.model_name),
        timezone=local_timezone(),
        log=Path(log).expanduser().absolute() if log else workdir / f"{name}.log",
        bin_dir=bin_dir,
        env=env,
    )


def check_no_secret_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """An override holding a secret (a key named like one, a URI password) would be kept in
    plain text on the job's command line: refused, with how the config can read it instead.
    ``${...}`` interpolations (``${oc.env:API_TOKEN}``) are what the job resolves: allowed."""
    for override in overrides:
        key, sep, value = override.partition("=")
        key = key.lstrip("+~")
        # Said with more to the point below: the webhook's variable, the tracking URI's files.
        if not sep or "${" in value or key in ("alerts.webhook", "tracking.uri"):
            continue
        if redact_value(key, value) != value:
            raise ConfigError(
                f"{key}: holds a secret, which the job's command line would keep in plain text "
                f"(a crontab, a unit, a DAG, a manifest); let the config read it when the job "
                f"runs instead, e.g. {key}='${{oc.env:NAME}}' with NAME in the job's environment"
            )


def check_no_password(uri: str, where: str) -> None:
    """A job pins its tracking URI in plain text (a crontab line, a unit file, a DAG, a
    manifest): one with a password is refused, with where to keep the password instead.
    Raises ConfigError naming ``where`` the URI came from."""
    if redact_url(uri) == uri:
        return
    raise ConfigError(
        f"{where}: the tracking URI {redact_url(uri)} holds a password, which the scheduled job "
        "would keep in plain text (it pins the URI in its environment); take the password out "
        "of the URI and keep it where the job reads it when it runs: ~/.pgpass for PostgreSQL, "
        "~/.netrc for an http(s) tracking server (both mode 600)"
    )


def check_data_source(cfg: DictConfig) -> None:
    """The job's data file exists (relative to the current directory) and its header names
    ``data.target``. Reads the header only. A bundled dataset (``data.source=sklearn``) has
    nothing to check. Raises DataError for a missing or unreadable file, ConfigError for a
    target that is not one of its columns."""
    data = cfg.data
    if data.source != "csv":
        return
    path = Path(str(data.path)).expanduser()
    if not path.is_file():
        what = "no file" if not path.exists() else "not a file"
        raise DataError(f"data.path: {what} at {path.absolute()}")
    columns = csv_columns(path, OmegaConf.to_container(data.read_options, resolve=True))
    if str(data.target) not in columns:
        shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
        raise ConfigError(
            f"data.target: no column {str(data.target)!r} in {path.absolute()} (columns: {shown})"
        )


def csv_columns(path: Path, read_options: dict[str, Any]) -> list[str]:
    """The column names ``pandas.read_csv(path, **read_options)`` would give, from the header
    alone. Raises DataError when the header cannot be read, ConfigError for bad options."""
    import pandas as pd

    options = {k: v for k, v in read_options.items() if k not in ("nrows", "chunksize")}
    if options.get("engine") == "pyarrow":  # it cannot stop after the header
        del options["engine"]
    for key in ("sep", "delimiter"):  # as the ingest stage reads a typed '\\t'
        if options.get(key) == "\\t":
            options[key] = "\t"
    try:
        return [str(c) for c in pd.read_csv(path, nrows=0, **options).columns]
    except (TypeError, LookupError) as exc:  # an option read_csv does not take, an encoding
        raise ConfigError(f"data.read_options: {exc}") from exc
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # EmptyDataError, ParserError
        raise DataError(f"data.path: cannot read the header of {path.absolute()}: {exc}") from exc


# ---- the four schedulers -------------------------------------------------------------------


def crontab_line(job: ScheduledJob) -> str:
    """``M H * * * cd DIR && <command> >> LOG 2>&1 # mlflow-pipeline job NAME``.

    cron turns an unescaped ``%`` into a newline, so every ``%`` is escaped.
    """
    line = (
        f"{job.cron} {job.shell_command()} >> {shlex.quote(str(job.log))} 2>&1 "
        f"{CRON_MARKER}{job.name}"
    )
    return line.replace("%", "\\%")


def systemd_units(job: ScheduledJob) -> dict[str, str]:
    """``<name>.service`` (oneshot: the command) and ``<name>.timer`` (daily, catching up on a
    run missed while the machine was off), as user units."""
    env = " ".join(_systemd_quote(f"{k}={v}", exec_line=False) for k, v in job.env.items())
    service = f"""\
# Made by `mlflow-pipeline schedule systemd`: the daily pipeline run of model {job.model_name}.
[Unit]
Description=mlflow-pipeline daily run (model {_specifiers(job.model_name)})

[Service]
Type=oneshot
WorkingDirectory={_specifiers(str(job.workdir))}
Environment={env}
ExecStart={" ".join(_systemd_quote(word, exec_line=True) for word in job.argv)}
"""
    timer = f"""\
# Made by `mlflow-pipeline schedule systemd`: starts {job.name}.service daily at {job.at}.
[Unit]
Description=mlflow-pipeline daily run (model {_specifiers(job.model_name)}) at {job.at}

[Timer]
OnCalendar=*-*-* {job.at}:00
Persistent=true
Unit={job.name}.service

[Install]
WantedBy=timers.target
"""
    return {f"{job.name}.service": service, f"{job.name}.timer": timer}


def _specifiers(text: str) -> str:
    return text.replace("%", "%%")


def _systemd_quote(word: str, *, exec_line: bool) -> str:
    """One word of ``ExecStart=`` (``$`` expands there) or ``Environment=`` (it does not);
    ``%`` is a specifier in both."""
    word = _specifiers(word)
    if exec_line:
        word = word.replace("$", "$$")
    if word and not re.search(r"[\s'\"\\;]", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


AIRFLOW_DAG = '''\
"""The daily mlflow-pipeline run of model {model}, at {at} ({timezone}).

Made by `mlflow-pipeline schedule airflow`: the same command as the crontab line and the
systemd timer. Put this file in Airflow's dags folder.
"""

from __future__ import annotations

import os
import re
import subprocess

import pendulum
from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

WORKDIR = {workdir!r}
COMMAND = {command!r}
ENV = {env!r}
# The pipeline's own alert hooks (conf/alerts), for failures it cannot report itself.
ALERT = {alert!r}


def alert_on_failure(context):
    """The pipeline alerts by itself when it fails (exit code 1); this covers the rest: the
    task killed, timed out or unable to start."""
    error = context.get("exception")
    if error is not None and re.search(r"exit code 1\\b", str(error)):
        return
    subprocess.run(
        [*ALERT, "--error", f"Airflow task failed: {{error!r}}"],
        cwd=WORKDIR,
        env={{**os.environ, **ENV}},
        timeout=60,
        check=False,
    )


with DAG(
    dag_id={name!r},
    schedule={cron!r},
    start_date=pendulum.datetime(2024, 1, 1, tz={timezone!r}),
    catchup=False,
    max_active_runs=1,
    default_args={{"retries": 0}},
    tags=["mlflow-pipeline"],
) as dag:
    BashOperator(
        task_id="pipeline",
        bash_command=COMMAND,
        env=ENV,
        append_env=True,
        on_failure_callback=alert_on_failure,
    )
'''


def airflow_dag(job: ScheduledJob) -> str:
    """A DAG file: one BashOperator running the command daily, no catch-up, no retries (a
    rerun resumes from the stage cache anyway), a failure callback calling the alert hooks."""
    command = job.shell_command(with_env=False)  # the operator's env= sets them
    if re.search(r"\{[{%#]", command):  # Airflow renders bash_command with Jinja
        command = "{% raw %}" + command + "{% endraw %}"
    elif command.endswith((".sh", ".bash")):  # ... and would read it as a template file
        command += " "
    alert = [
        str(job.bin_dir / "python"),
        "-m",
        "mlflow_pipeline.engine.alerts",
        "--stage",
        "airflow",
    ]
    return AIRFLOW_DAG.format(
        model=job.model_name,
        at=job.at,
        timezone=job.timezone,
        workdir=str(job.workdir),
        command=command,
        env=dict(job.env),
        alert=[*alert, *job.overrides],
        name=job.name,
        cron=job.cron,
    )


def k8s_defaults() -> tuple[str, str]:
    """The image and namespace of ``projects/k8s`` (its MLproject and Job template)."""
    image, namespace = "mlflow-pipeline:0.1.0", "mlflow"
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
        project = yaml.safe_load((K8S_PROJECT / "MLproject").read_text(encoding="utf-8"))
        image = project["docker_env"]["image"]
    with contextlib.suppress(OSError, yaml.YAMLError, AttributeError, TypeError):
        template = (K8S_PROJECT / "kubernetes_job_template.yaml").read_text(encoding="utf-8")
        namespace = yaml.safe_load(template)["metadata"]["namespace"]
    return image, namespace


def k8s_cronjob(
    job: ScheduledJob, *, image: str | None = None, namespace: str | None = None
) -> Rendering:
    """A ``batch/v1`` CronJob running the pipeline in the image of ``projects/k8s`` (its
    ``mlflow-pipeline``, not this venv's). Never two at once (concurrencyPolicy Forbid), no
    retries. Pods need a tracking server: ``$KUBE_MLFLOW_TRACKING_URI`` if set, else the
    config's URI (with a note when that is not an http(s) server)."""
    default_image, default_namespace = k8s_defaults()
    uri = os.environ.get(Env.KUBE_TRACKING_URI) or job.tracking_uri
    check_no_password(uri, f"${Env.KUBE_TRACKING_URI}")
    notes = []
    if not uri.startswith(("http://", "https://")):
        notes.append(
            f"the CronJob's pods use tracking URI {uri}, which they cannot reach: set "
            f"tracking.uri or ${Env.KUBE_TRACKING_URI} to a tracking server they reach"
        )
    if job.launcher == "mlflow-run":
        command = mlflow_run_argv("mlflow", IMAGE_PROJECT_DIR, job)
    else:
        command = ["mlflow-pipeline", *job.overrides]
    container = {
        "name": "pipeline",
        "image": image or default_image,
        "command": command,
        "workingDir": "/tmp",
        "env": _k8s_env(uri),
        "resources": {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"memory": "8Gi"},
        },
    }
    manifest = _k8s_manifest(job, container, namespace or default_namespace)
    header = (
        f"# Made by `mlflow-pipeline schedule k8s`: the daily pipeline run of model "
        f"{job.model_name} at {job.at} ({job.timezone}).\n"
        f"# Image: docker build -f projects/k8s/Dockerfile -t {image or default_image} . "
        "(push it where the cluster pulls from).\n"
        f"# Data paths are read inside the pod (working directory /tmp). Alert webhook: "
        f"kubectl create secret generic {K8S_ALERT_SECRET} --from-literal=webhook=URL\n"
    )
    text = header + yaml.safe_dump(manifest, sort_keys=False, width=1000)
    return Rendering(text=text, files={f"{job.name}.yaml": text}, notes=notes)


def _k8s_env(uri: str) -> list[dict[str, object]]:
    """The pipeline container's environment: the tracking server, no progress bars, and the
    alert webhook from its Secret when that exists."""
    return [
        {"name": Env.TRACKING_URI, "value": uri},
        {"name": Env.ARTIFACTS_PROGRESS_BAR, "value": "false"},
        {
            "name": Env.ALERT_WEBHOOK,
            "valueFrom": {
                "secretKeyRef": {"name": K8S_ALERT_SECRET, "key": "webhook", "optional": True}
            },
        },
    ]


def _k8s_manifest(job: ScheduledJob, container: dict[str, object], namespace: str) -> dict:
    """The CronJob around ``container``: daily at ``job``'s time, never two at once, no
    retries, finished jobs kept a day."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": job.name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "mlflow-pipeline"},
        },
        "spec": {
            "schedule": job.cron,
            "timeZone": job.timezone,
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "ttlSecondsAfterFinished": 86400,
                    "template": {
                        "metadata": {"labels": {"app.kubernetes.io/name": "mlflow-pipeline"}},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [container],
                        },
                    },
                }
            },
        },
    }


def render(
    engine: str, job: ScheduledJob, *, image: str | None = None, namespace: str | None = None
) -> Rendering:
    """What ``engine`` needs to run ``job`` daily. Raises ConfigError for an unknown engine."""
    notes = []
    secret = job.holds_secret and engine != "k8s"
    if secret:
        notes.append(
            f"${Env.ALERT_WEBHOOK} is written into the {engine} job (it holds a secret); the "
            "files written are readable by you only (mode 600)"
        )
    if engine == "cron":
        line = crontab_line(job)
        files = {f"{job.name}.crontab": line + "\n"}
        return Rendering(text=line, files=files, notes=notes, secret=secret)
    if engine == "systemd":
        units = systemd_units(job)
        return Rendering(text="\n".join(units.values()), files=units, notes=notes, secret=secret)
    if engine == "airflow":
        dag = airflow_dag(job)
        files = {f"{job.name.replace('-', '_')}.py": dag}
        return Rendering(text=dag, files=files, notes=notes, secret=secret)
    if engine == "k8s":
        return k8s_cronjob(job, image=image, namespace=namespace)
    raise ConfigError(f"unknown scheduler {engine!r}; choose from {', '.join(ENGINES)}")


# ---- writing and installing ----------------------------------------------------------------


def write(rendering: Rendering, output: str | Path, *, into: bool = False) -> list[Path]:
    """Write the rendering's file to ``output`` (a file), or its files into ``output`` when
    ``into`` is set, it is a directory (or ends with ``/``) or there are several (systemd).
    Raises ScheduleError."""
    into = into or str(output).endswith(os.sep)
    output = Path(output).expanduser()
    try:
        if into or len(rendering.files) > 1 or output.is_dir():
            output.mkdir(parents=True, exist_ok=True)
            targets = {output / name: text for name, text in rendering.files.items()}
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            targets = {output: next(iter(rendering.files.values()))}
        for path, text in targets.items():
            if rendering.secret:  # created 0600, and made so when it was there already
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as file:
                    file.write(text)
            else:
                path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ScheduleError(f"cannot write {output}: {exc.strerror or exc}") from exc
    return list(targets)


def install_cron(job: ScheduledJob) -> str:
    """Add the job's line to the user's crontab with ``crontab -``, keeping every other line;
    an earlier line of the same job (same name) is replaced, an identical one left alone.
    Returns what happened. Raises ScheduleError when there is no usable ``crontab``."""
    crontab = shutil.which("crontab")
    if crontab is None:
        raise ScheduleError(
            "--install: no `crontab` command on PATH (install cron, e.g. apt-get install cron, "
            "or use `mlflow-pipeline schedule systemd --install`)"
        )
    line = crontab_line(job)
    listed = _crontab(crontab, "-l")
    if listed.returncode == 0:
        lines = listed.stdout.splitlines()
    elif "no crontab" in listed.stderr.lower():
        lines = []
    else:
        raise ScheduleError(f"crontab -l failed: {listed.stderr.strip() or listed.returncode}")
    if line in lines:
        return f"already in the crontab: {line}"
    marker = f"{CRON_MARKER}{job.name}"
    kept = [existing for existing in lines if not existing.rstrip().endswith(marker)]
    written = _crontab(crontab, "-", text="\n".join([*kept, line]) + "\n")
    if written.returncode != 0:
        raise ScheduleError(f"crontab - failed: {written.stderr.strip() or written.returncode}")
    verb = "replaced job" if len(kept) < len(lines) else "added job"
    return f"{verb} {job.name} to the crontab ({len(kept)} other line(s) kept): {line}"


def _crontab(crontab: str, flag: str, text: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            [crontab, flag],
            input=text,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScheduleError(f"crontab {flag}: {exc}") from exc


def systemd_user_dir() -> Path:
    """Where systemd looks for the user's own units."""
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def install_systemd(job: ScheduledJob) -> tuple[list[Path], str]:
    """Write the units to ``~/.config/systemd/user/``; returns the files and the command that
    enables the timer (not run here). Raises ScheduleError."""
    units = Rendering(text="", files=systemd_units(job), secret=job.holds_secret)
    paths = write(units, systemd_user_dir(), into=True)
    enable = f"systemctl --user daemon-reload && systemctl --user enable --now {job.name}.timer"
    return paths, enable


def airflow_dags_dir() -> Path:
    """``$AIRFLOW_HOME/dags`` (Airflow's default dags folder), ``~/airflow/dags`` by default."""
    return Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow") / "dags"


def deliver(
    engine: str,
    job: ScheduledJob,
    rendering: Rendering,
    *,
    install: bool = False,
    output: str | Path | None = None,
) -> str:
    """Install the rendering (``install``), write it (``output``), or return it to print.
    Returns what to tell the user. Raises ScheduleError, or ConfigError for ``k8s --install``."""
    if install and engine == "cron":
        return install_cron(job)
    if install and engine == "systemd":
        paths, enable = install_systemd(job)
        return "\n".join(
            [
                "wrote " + ", ".join(str(p) for p in paths),
                f"enable the timer with: {enable}",
                "(to run while you are logged out: loginctl enable-linger $USER)",
            ]
        )
    if install and engine == "airflow":
        return "wrote " + ", ".join(str(p) for p in write(rendering, airflow_dags_dir(), into=True))
    if install:
        raise ConfigError(
            f"--install: not for {engine}; use --output FILE, then kubectl apply -f FILE"
        )
    if output:
        return "wrote " + ", ".join(str(p) for p in write(rendering, output))
    return rendering.text
