"""Daily schedules on cron, systemd, Airflow and Kubernetes: each form parsed by a real parser
(a five-field cron parser, configparser and systemd-analyze, Python's compiler and Airflow's
DagBag, YAML), all running the same command; installing into a fake `crontab` and a tmp HOME."""

from __future__ import annotations

import ast
import configparser
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlflow_pipeline.apps import schedule
from mlflow_pipeline.cli.commands import schedule_main
from mlflow_pipeline.cli.project import split_options
from mlflow_pipeline.config import PROJECT_ROOT, load_config
from mlflow_pipeline.errors import ConfigError, DataError
from tests.helpers import TrackingStore

OVERRIDES = ("model=logistic_regression", "steps=[ingest]", "+validation.ranges.age={min: 0}")
VENV_BIN = Path(sys.executable).absolute().parent

# ---- a cron parser: the five time fields as cron reads them -------------------------------

CRON_FIELDS = (  # name, first, last, names
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, tuple("jan feb mar apr may jun jul aug sep oct nov dec".split())),
    ("day of week", 0, 7, tuple("sun mon tue wed thu fri sat".split())),
)


def parse_cron_field(text: str, first: int, last: int, names: tuple[str, ...]) -> set[int]:
    """The values a cron field matches: ``*``, ``N``, ``N-M``, any of them ``/STEP``, lists."""

    def number(word: str) -> int:
        if word.lower() in names:
            return names.index(word.lower()) + (1 if first == 1 else 0)
        if not word.isdigit():
            raise ValueError(f"not a number: {word!r}")
        value = int(word)
        if not first <= value <= last:
            raise ValueError(f"{value} outside {first}-{last}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            low, high = first, last
        elif "-" in span:
            low, high = (number(w) for w in span.split("-", 1))
        else:
            low = high = number(span)
        stride = int(step) if step else 1
        if stride < 1 or low > high:
            raise ValueError(f"bad range {item!r}")
        values.update(range(low, high + 1, stride))
    return values


def parse_crontab_line(line: str) -> tuple[list[set[int]], str]:
    """``(the five fields' values, the command)`` of a crontab entry; raises ValueError."""
    parts = line.split(None, 5)
    if len(parts) != 6:
        raise ValueError("a crontab entry is five time fields and a command")
    fields = [
        parse_cron_field(text, first, last, names)
        for text, (_, first, last, names) in zip(parts[:5], CRON_FIELDS, strict=True)
    ]
    return fields, parts[5]


def as_cron_runs_it(command: str) -> str:
    """What cron hands to /bin/sh: ``\\%`` becomes ``%``; an unescaped ``%`` ends the command."""
    unescaped = re.split(r"(?<!\\)%", command)[0]
    return unescaped.replace("\\%", "%")


def test_the_cron_parser_rejects_what_cron_rejects():
    assert parse_crontab_line("*/15 6-8 1,15 jan-mar mon echo hi")[0][:2] == [
        {0, 15, 30, 45},
        {6, 7, 8},
    ]
    for bad in ("60 6 * * * x", "30 24 * * * x", "30 6 * * x", "a 6 * * * x", "30 6 0 * * x"):
        with pytest.raises(ValueError, match=r"."):
            parse_crontab_line(bad)


# ---- the job every form is rendered from ---------------------------------------------------


@pytest.fixture
def job(tmp_path: Path, tracking_store: TrackingStore) -> schedule.ScheduledJob:
    return schedule.scheduled_job(OVERRIDES, at="06:30", workdir=tmp_path)


def test_the_job_pins_command_store_and_directory(job, tmp_path, tracking_store):
    assert (job.hour, job.minute, job.cron) == (6, 30, "30 6 * * *")
    assert job.argv == [str(VENV_BIN / "mlflow-pipeline"), *OVERRIDES]
    assert job.workdir == tmp_path
    assert job.env["MLFLOW_TRACKING_URI"] == tracking_store.uri  # resolved from the config
    assert job.env["PATH"].startswith(f"{VENV_BIN}:")
    assert job.name == "mlflow-pipeline-breast-cancer"  # DNS-1123: no underscore
    assert job.log == tmp_path / "mlflow-pipeline-breast-cancer.log"


@pytest.mark.parametrize(
    ("at", "expected"), [("06:30", (6, 30)), ("6:05", (6, 5)), ("23:59", (23, 59))]
)
def test_at_is_24_hour_hh_mm(at, expected):
    assert schedule.parse_at(at) == expected


@pytest.mark.parametrize("at", ["24:00", "6:5", "06:60", "6pm", ""])
def test_a_bad_time_is_refused(at):
    with pytest.raises(ConfigError, match="expected HH:MM"):
        schedule.parse_at(at)


def test_a_bad_config_is_refused_when_scheduling_not_at_run_time(tmp_path):
    with pytest.raises(ConfigError, match="n_estimatorz"):
        schedule.scheduled_job(["model.n_estimatorz=3"], workdir=tmp_path)


# ---- cron ----------------------------------------------------------------------------------


def test_crontab_line_parses_and_runs_the_command_daily(job, tmp_path, tracking_store):
    line = schedule.crontab_line(job)
    (minutes, hours, days, months, weekdays), command = parse_crontab_line(line)
    assert (minutes, hours) == ({30}, {6})
    assert days == set(range(1, 32))
    assert months == set(range(1, 13))
    assert weekdays == set(range(0, 8))
    words = shlex.split(as_cron_runs_it(command), comments=True)
    assert words[:3] == ["cd", str(tmp_path), "&&"]
    assert f"MLFLOW_TRACKING_URI={tracking_store.uri}" in words
    start = words.index(str(VENV_BIN / "mlflow-pipeline"))
    assert words[start:] == [*job.argv, ">>", str(job.log), "2>&1"]
    assert line.endswith(f"# mlflow-pipeline job {job.name}")


def test_percent_signs_are_escaped_for_cron(job):
    line = schedule.crontab_line(dataclasses.replace(job, overrides=("a=50%",)))
    assert "a=50\\%" in line
    assert re.search(r"(?<!\\)%", line) is None  # cron would cut the command there
    assert "a=50%" in as_cron_runs_it(parse_crontab_line(line)[1])


@pytest.fixture
def fake_crontab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `crontab` executable on PATH that keeps the table in a file, like the real one."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    table = tmp_path / "crontab.txt"
    script = bin_dir / "crontab"
    script.write_text(
        f"""#!/bin/sh
case "$1" in
  -l) if [ -f {shlex.quote(str(table))} ]; then cat {shlex.quote(str(table))};
      else echo "no crontab for $(id -un)" >&2; exit 1; fi ;;
  -) cat > {shlex.quote(str(table))} ;;
  *) echo "usage: crontab [-l | -]" >&2; exit 2 ;;
esac
""",
        encoding="utf-8",
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return table


def test_install_cron_adds_one_line_keeps_others_and_never_duplicates(
    fake_crontab, tmp_path, capsys
):
    fake_crontab.write_text("MAILTO=ops@example.com\n0 1 * * * /usr/bin/backup\n")
    args = ["cron", "--install", "--at", "06:30", "--workdir", str(tmp_path), *OVERRIDES]
    assert schedule_main(args) == 0
    assert "added job mlflow-pipeline-breast-cancer to the crontab" in capsys.readouterr().out
    first = fake_crontab.read_text().splitlines()
    assert first[:2] == ["MAILTO=ops@example.com", "0 1 * * * /usr/bin/backup"]
    assert len(first) == 3
    assert first[2].startswith("30 6 * * * cd ")

    assert schedule_main(args) == 0  # again: nothing changes
    assert "already in the crontab" in capsys.readouterr().out
    assert fake_crontab.read_text().splitlines() == first

    args[3] = "07:15"  # the same job at another time replaces its line
    assert schedule_main(args) == 0
    assert "replaced job" in capsys.readouterr().out
    lines = fake_crontab.read_text().splitlines()
    assert lines[:2] == first[:2]
    assert len(lines) == 3
    assert parse_crontab_line(lines[2])[0][:2] == [{15}, {7}]


@pytest.mark.parametrize(
    ("engine", "override", "env", "where"),
    [
        ("cron", "tracking.uri=postgresql://mlflow:s3cret@db:5432/mlflow", {}, "tracking.uri"),
        ("cron", None, {"MLFLOW_TRACKING_URI": "http://ops:s3cret@mlflow:5000"}, "$MLFLOW_"),
        ("k8s", None, {"KUBE_MLFLOW_TRACKING_URI": "https://ops:s3cret@mlflow"}, "$KUBE_"),
    ],
)
def test_a_tracking_uri_with_a_password_is_refused_and_nothing_is_installed(
    fake_crontab, tmp_path, monkeypatch, capsys, engine, override, env, where
):
    """The job pins its tracking URI in plain text: a password there is refused, not kept in a
    crontab, unit or manifest, nor printed."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    output = tmp_path / "job.out"
    args = [engine, "--workdir", str(tmp_path), "--output", str(output), *OVERRIDES]
    if engine == "cron":
        args.insert(1, "--install")
    assert schedule_main([*args, *([override] if override else [])]) == 1
    out, err = capsys.readouterr()
    assert f"{where}" in err
    assert "holds a password" in err
    assert "~/.pgpass" in err
    assert "s3cret" not in out + err
    assert not fake_crontab.exists()
    assert not output.exists()


def test_a_secret_override_is_refused_and_a_webhook_file_is_readable_by_its_owner_only(
    tmp_path, monkeypatch, capsys
):
    (tmp_path / "x.csv").write_text("age,t\n40,1.5\n")
    overrides = ["data=csv", "data.path=x.csv", "data.target=t", "data.task=regression"]
    with pytest.raises(ConfigError, match=r"^data.api_token: holds a secret.*oc.env:NAME"):
        schedule.scheduled_job([*overrides, "+data.api_token=abc123"], workdir=tmp_path)
    # Read from the job's environment when it runs: nothing secret on the command line.
    read = "+data.api_token=${oc.env:API_TOKEN,none}"
    assert read in schedule.scheduled_job([*overrides, read], workdir=tmp_path).overrides

    monkeypatch.setenv("MLFLOW_PIPELINE_ALERT_WEBHOOK", "https://hooks.example/T0KEN")
    for engine in ("systemd", "airflow"):
        output = tmp_path / engine
        args = [engine, "--workdir", str(tmp_path), "--output", f"{output}/", *overrides]
        assert schedule_main(args) == 0
        assert "readable by you only (mode 600)" in capsys.readouterr().err
        written = list(output.iterdir())
        assert written
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in written)


def test_install_cron_into_an_empty_crontab(fake_crontab, tmp_path, capsys):
    assert schedule_main(["cron", "--install", "--workdir", str(tmp_path), *OVERRIDES]) == 0
    [line] = fake_crontab.read_text().splitlines()
    assert parse_crontab_line(line)[0][:2] == [{0}, {6}]  # default 06:00


def test_install_cron_without_crontab_is_a_clear_error(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert schedule_main(["cron", "--install", "--workdir", str(tmp_path), *OVERRIDES]) == 1
    assert "no `crontab` command on PATH" in capsys.readouterr().err


# ---- the data is checked before anything is written ----------------------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the job would run: one small CSV file (customers.csv: income, age, label)."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "customers.csv").write_text("income,age,label\n52.0,40,1\n31.5,22,0\n")
    return folder


def csv_job(*changes: str) -> list[str]:
    return [
        "data=csv",
        "data.path=customers.csv",
        "data.target=label",
        "data.task=classification",
        *changes,
    ]


@pytest.mark.parametrize(
    ("typo", "error", "message"),
    [
        (
            "data.target=labl",
            ConfigError,
            r"^data.target: no column 'labl' in .*/work/customers.csv \(columns: income, age, "
            r"label\)$",
        ),
        ("data.path=nosuch.csv", DataError, r"^data.path: no file at .*/work/nosuch.csv$"),
    ],
)
def test_a_data_typo_fails_when_the_job_is_made(workdir, typo, error, message):
    with pytest.raises(error, match=message):
        schedule.scheduled_job(csv_job(typo), workdir=workdir)
    job = schedule.scheduled_job(csv_job(), workdir=workdir)  # relative to the job's directory
    assert job.overrides == tuple(csv_job())


def test_the_header_is_read_with_the_data_read_options(workdir):
    (workdir / "customers.csv").write_text("income;age;label\n52.0;40;1\n")
    with pytest.raises(ConfigError, match="no column 'label' .* \\(columns: income;age;label\\)"):
        schedule.scheduled_job(csv_job(), workdir=workdir)
    schedule.scheduled_job(csv_job("+data.read_options.sep=';'"), workdir=workdir)


@pytest.mark.parametrize("typo", ["data.target=labl", "data.path=nosuch.csv"])
def test_a_data_typo_installs_and_writes_nothing(
    workdir, tmp_path, fake_crontab, monkeypatch, typo, capsys
):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    fake_crontab.write_text("0 1 * * * /usr/bin/backup\n")
    before = sorted(p.name for p in workdir.iterdir())
    output = workdir / "out" / "job.crontab"
    for args in (["cron", "--install"], ["cron", "-o", str(output)], ["airflow", "--install"]):
        assert schedule_main([*args, "--workdir", str(workdir), *csv_job(typo)]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        [line] = captured.err.splitlines()
        assert line.startswith(f"mlflow-pipeline: error: {typo.split('=')[0]}: no ")
    assert fake_crontab.read_text() == "0 1 * * * /usr/bin/backup\n"
    assert sorted(p.name for p in workdir.iterdir()) == before
    assert not (tmp_path / "airflow").exists()


def test_the_cli_exits_non_zero_with_one_line_for_a_typo(workdir, tmp_path):
    result = subprocess.run(
        [str(VENV_BIN / "mlflow-pipeline"), "schedule", "cron", "-o", "cron.txt"]
        + csv_job("data.target=labl"),
        cwd=workdir,
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"mlflow-pipeline: error: data.target: no column 'labl' in {workdir / 'customers.csv'} "
        "(columns: income, age, label)"
    ]
    assert sorted(p.name for p in workdir.iterdir()) == ["customers.csv"]


def test_k8s_leaves_the_data_to_the_pod(workdir, capsys):
    """A CronJob's data path is read inside the cluster: not checked on this machine."""
    args = ["k8s", "--workdir", str(workdir), *csv_job("data.path=/mnt/data/latest.csv")]
    assert schedule_main(args) == 0
    assert "kind: CronJob" in capsys.readouterr().out


@pytest.mark.slow
def test_the_crontab_command_runs_the_pipeline_as_cron_would(job, tracking_store):
    """/bin/sh with cron's bare environment: the pinned PATH and store make it work."""
    command = as_cron_runs_it(parse_crontab_line(schedule.crontab_line(job))[1])
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        env={"HOME": str(job.workdir), "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, job.log.read_text()[-3000:]
    assert "stage ingest" in job.log.read_text()
    runs = tracking_store.client().search_runs(
        [tracking_store.client().get_experiment_by_name("breast_cancer").experiment_id],
        "tags.`pipeline.kind` = 'pipeline'",
    )
    assert [r.info.status for r in runs] == ["FINISHED"]


# ---- systemd -------------------------------------------------------------------------------


def read_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def test_systemd_units_are_a_daily_oneshot_service_and_its_timer(job, tmp_path, tracking_store):
    units = schedule.systemd_units(job)
    assert set(units) == {f"{job.name}.service", f"{job.name}.timer"}
    service = read_unit(units[f"{job.name}.service"])
    assert service.sections() == ["Unit", "Service"]
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["WorkingDirectory"] == str(tmp_path)
    env = dict(w.split("=", 1) for w in shlex.split(service["Service"]["Environment"]))
    assert env["MLFLOW_TRACKING_URI"] == tracking_store.uri
    assert shlex.split(service["Service"]["ExecStart"]) == job.argv
    timer = read_unit(units[f"{job.name}.timer"])
    assert timer.sections() == ["Unit", "Timer", "Install"]
    assert timer["Timer"]["OnCalendar"] == "*-*-* 06:30:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == f"{job.name}.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units(job, tmp_path):
    """systemd's own parser: the calendar spec, the quoting and every setting."""
    calendar = subprocess.run(
        ["systemd-analyze", "calendar", "*-*-* 06:30:00"], capture_output=True, text=True
    )
    assert calendar.returncode == 0
    assert "Normalized form: *-*-* 06:30:00" in calendar.stdout
    paths = schedule.write(schedule.render("systemd", job), tmp_path / "units")
    verify = subprocess.run(
        ["systemd-analyze", "verify", *map(str, paths)], capture_output=True, text=True
    )
    if "Failed to initialize manager" in verify.stderr:
        pytest.skip(f"systemd-analyze verify cannot run here: {verify.stderr.strip()}")
    assert verify.returncode == 0, verify.stderr


def test_systemd_quoting_survives_spaces_percent_and_dollar(job):
    odd = dataclasses.replace(job, overrides=("data.path=/my data/50%$HOME.csv",))
    service = read_unit(schedule.systemd_units(odd)[f"{job.name}.service"])
    exec_start = service["Service"]["ExecStart"]
    assert '"data.path=/my data/50%%$$HOME.csv"' in exec_start
    words = shlex.split(exec_start.replace("%%", "%").replace("$$", "$"))
    assert words[-1] == "data.path=/my data/50%$HOME.csv"


def test_install_systemd_writes_user_units_and_prints_how_to_enable(
    tmp_path, tracking_store, monkeypatch, capsys
):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert schedule_main(["systemd", "--install", "--workdir", str(tmp_path), *OVERRIDES]) == 0
    out = capsys.readouterr().out
    unit_dir = home / ".config" / "systemd" / "user"
    name = "mlflow-pipeline-breast-cancer"
    assert sorted(p.name for p in unit_dir.iterdir()) == [f"{name}.service", f"{name}.timer"]
    assert f"systemctl --user enable --now {name}.timer" in out
    timer = read_unit((unit_dir / f"{name}.timer").read_text())
    assert timer["Timer"]["OnCalendar"] == "*-*-* 06:00:00"


# ---- Airflow -------------------------------------------------------------------------------


def dag_call(source: str) -> dict[str, object]:
    """The literal keyword arguments of ``DAG(...)`` in a DAG file, and its constants."""
    tree = ast.parse(source)
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            with_literal = node.targets[0].id
            try:
                found[with_literal] = ast.literal_eval(node.value)
            except ValueError:
                pass
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("DAG", "BashOperator"):
            for keyword in node.keywords:
                try:
                    found[f"{node.func.id}.{keyword.arg}"] = ast.literal_eval(keyword.value)
                except ValueError:
                    found[f"{node.func.id}.{keyword.arg}"] = ast.unparse(keyword.value)
    return found


def test_airflow_dag_compiles_and_runs_the_command_daily(job, tmp_path, tracking_store):
    source = schedule.airflow_dag(job)
    compile(source, f"{job.name}.py", "exec")
    dag = dag_call(source)
    assert dag["DAG.dag_id"] == job.name
    assert dag["DAG.schedule"] == "30 6 * * *"
    assert dag["DAG.catchup"] is False
    assert dag["DAG.default_args"] == {"retries": 0}
    assert dag["BashOperator.on_failure_callback"] == "alert_on_failure"
    assert dag["ENV"]["MLFLOW_TRACKING_URI"] == tracking_store.uri
    words = shlex.split(dag["COMMAND"])
    assert words == ["cd", str(tmp_path), "&&", *job.argv]


def test_airflow_jinja_in_a_command_is_kept_literal(job):
    odd = dataclasses.replace(job, overrides=("+data.read_options.sep='{{'",))
    command = dag_call(schedule.airflow_dag(odd))["COMMAND"]
    assert command.startswith("{% raw %}")
    assert command.endswith("{% endraw %}")


def test_airflow_dagbag_imports_the_dag(job, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    pytest.importorskip(
        "airflow", reason="Airflow is not installed in this venv (not a dependency)"
    )
    from airflow.models import DagBag

    folder = tmp_path / "dags"
    schedule.write(schedule.render("airflow", job), folder, into=True)
    bag = DagBag(dag_folder=str(folder))  # parses the file; no Airflow database needed
    assert bag.import_errors == {}
    dag = bag.dags[job.name]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert "30 6 * * *" in str(dag.timetable)
    [task] = dag.tasks
    assert task.task_id == "pipeline"
    assert task.retries == 0
    assert task.bash_command == f"cd {shlex.quote(str(job.workdir))} && {shlex.join(job.argv)}"
    assert task.env == job.env


def test_install_airflow_writes_into_the_dags_folder(tmp_path, tracking_store, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))  # no dags folder yet
    assert schedule_main(["airflow", "--install", "--workdir", str(tmp_path)]) == 0
    dag_file = tmp_path / "airflow" / "dags" / "mlflow_pipeline_breast_cancer.py"
    assert capsys.readouterr().out.strip() == f"wrote {dag_file}"
    compile(dag_file.read_text(), str(dag_file), "exec")


# ---- Kubernetes ----------------------------------------------------------------------------


def test_k8s_cronjob_manifest(job, monkeypatch):
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "http://mlflow.mlflow.svc:5000")
    rendering = schedule.render("k8s", job)
    assert rendering.notes == []
    manifest = yaml.safe_load(rendering.text)
    assert manifest["apiVersion"] == "batch/v1"
    assert manifest["kind"] == "CronJob"
    assert manifest["metadata"]["name"] == job.name
    assert manifest["metadata"]["namespace"] == "mlflow"  # projects/k8s's
    spec = manifest["spec"]
    assert spec["schedule"] == "30 6 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == job.timezone
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    project = yaml.safe_load((PROJECT_ROOT / "projects" / "k8s" / "MLproject").read_text())
    assert container["image"] == project["docker_env"]["image"]
    assert container["command"] == ["mlflow-pipeline", *OVERRIDES]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlflow.svc:5000"


def test_k8s_warns_when_pods_cannot_reach_the_store(job, monkeypatch):
    monkeypatch.delenv("KUBE_MLFLOW_TRACKING_URI", raising=False)
    rendering = schedule.render("k8s", job, image="registry.example/mp:1", namespace="ml")
    assert "cannot reach" in rendering.notes[0]
    manifest = yaml.safe_load(rendering.text)
    assert manifest["metadata"]["namespace"] == "ml"
    assert manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
        "image"
    ] == ("registry.example/mp:1")


def test_k8s_has_no_install(job, tmp_path, capsys):
    args = ["k8s", "--install", "--workdir", str(tmp_path), *OVERRIDES]
    assert schedule_main(args) == 1
    assert "kubectl apply -f" in capsys.readouterr().err


# ---- one command everywhere ----------------------------------------------------------------


def test_every_scheduler_runs_the_same_command(job, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBE_MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    cron_words = shlex.split(
        as_cron_runs_it(parse_crontab_line(schedule.crontab_line(job))[1]), comments=True
    )
    start = cron_words.index(job.argv[0])
    from_cron = cron_words[start : start + len(job.argv)]
    service = read_unit(schedule.systemd_units(job)[f"{job.name}.service"])
    from_systemd = shlex.split(service["Service"]["ExecStart"])
    from_airflow = shlex.split(dag_call(schedule.airflow_dag(job))["COMMAND"])[3:]
    manifest = yaml.safe_load(schedule.render("k8s", job).text)
    container = manifest["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert from_cron == from_systemd == from_airflow == job.argv
    assert container["command"][1:] == job.argv[1:]  # the image's own mlflow-pipeline


def test_mlflow_run_launcher_passes_the_overrides_as_hydra_options(tmp_path, tracking_store):
    (tmp_path / "my data").mkdir()
    (tmp_path / "my data" / "x.csv").write_text("age,plan,t\n40,a b,1.5\n")
    overrides = [
        "data=csv",
        "data.path=my data/x.csv",
        "data.target=t",
        "data.task=regression",
        "+validation.ranges.age={min: 0, max: 120}",
        "+validation.categories.plan=['a b', c]",
    ]
    job = schedule.scheduled_job(overrides, workdir=tmp_path, launcher="mlflow-run")
    argv = job.argv
    assert argv[:5] == [
        str(VENV_BIN / "mlflow"),
        "run",
        str(PROJECT_ROOT),
        "--env-manager",
        "local",
    ]
    assert argv[5:7] == ["--experiment-name", "x"]
    assert argv[7] == "-P"
    assert argv[8].startswith("hydra_options=")
    # what the MLproject entry point makes of it: the same overrides (quoted for Hydra)
    options = split_options(argv[8].removeprefix("hydra_options="))
    assert options == [
        "data=csv",
        "data.path='my data/x.csv'",
        "data.target=t",
        "data.task=regression",
        "+validation.ranges.age={min:0,max:120}",
        "+validation.categories.plan=['a b',c]",
    ]
    assert load_config(options) == load_config(overrides)  # the same config to Hydra
    assert job.env["PATH"].startswith(f"{VENV_BIN}:")  # `python` in MLproject is the venv's


def test_output_writes_the_file_instead_of_printing(tmp_path, tracking_store, capsys):
    target = tmp_path / "out" / "dag.py"
    assert schedule_main(["airflow", "-o", str(target), "--workdir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {target}"
    compile(target.read_text(), str(target), "exec")


def test_mlflow_run_launcher_needs_a_project(tmp_path, tracking_store, monkeypatch):
    """Outside a project `mlflow run` fails at every run ("Could not find main among entry
    points []"): said now, not at 06:30."""
    (tmp_path / "x.csv").write_text("age,t\n40,1.5\n")
    monkeypatch.setattr(schedule, "PROJECT_ROOT", tmp_path)
    overrides = ["data=csv", "data.path=x.csv", "data.target=t", "data.task=regression"]
    with pytest.raises(ConfigError, match=r"--launcher mlflow-run: .* has no MLproject"):
        schedule.scheduled_job(overrides, workdir=tmp_path, launcher="mlflow-run")


def test_a_webhook_on_the_command_line_is_refused_not_written_into_the_job(tmp_path):
    """The job's command line is kept in plain text (crontab, unit, CronJob args)."""
    (tmp_path / "x.csv").write_text("age,t\n40,1.5\n")
    overrides = ["data=csv", "data.path=x.csv", "data.target=t", "data.task=regression"]
    with pytest.raises(ConfigError, match=r"alerts.webhook: a webhook URL is a secret.*instead"):
        schedule.scheduled_job(
            [*overrides, "alerts.webhook=https://user:tok@hooks.example/x"], workdir=tmp_path
        )
