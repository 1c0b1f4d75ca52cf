"""The command line's own parsing: MLproject parameters and flags that are not overrides."""

from __future__ import annotations

import shlex
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlflow_pipeline.cli.project import split_options, steps_override
from mlflow_pipeline.config import PROJECT_ROOT
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.schemas import contract_from_yaml


def test_hydra_options_split_like_a_shell_but_keep_quotes_for_hydra():
    assert split_options("model=random_forest 'data.path=/my data/x.csv'") == [
        "model=random_forest",
        "'data.path=/my data/x.csv'",
    ]


def test_a_whole_value_quoted_once_more_is_unwrapped():
    """MLflow's Kubernetes backend quotes each command word but runs it without a shell."""
    assert split_options("'model=random_forest model.max_depth=4'") == [
        "model=random_forest",
        "model.max_depth=4",
    ]
    assert split_options("'-m model.C=0.1,1.0'", sweep_allowed=True) == ["-m", "model.C=0.1,1.0"]


def test_a_sweep_runs_from_the_main_entry_point_only():
    with pytest.raises(ConfigError, match="a sweep .* main entry point only"):
        split_options("-m model.C=0.1,1.0")
    assert split_options("-m model.C=0.1,1.0", sweep_allowed=True)[0] == "-m"


def test_steps_parameter():
    assert steps_override("all") == []
    assert steps_override(" train, evaluate ") == ["steps=[train,evaluate]"]


def test_dry_run_of_a_sweep_is_refused_before_anything_runs(tmp_path, tracking_store):
    """Launcher workers would not see --dry-run and would train and register for real."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from mlflow_pipeline.cli.app import main; main()",
            "--dry-run",
            "-m",
            "model.max_iter=10,20",
            f"tracking.root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert "--dry-run plans one pipeline run: drop -m" in result.stderr
    client = tracking_store.client()
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []


def test_a_store_fault_prints_one_plain_line(capsys):
    from mlflow.exceptions import MlflowException

    from mlflow_pipeline.cli.common import fail, store_fault

    try:
        try:
            raise OSError("(sqlite3.OperationalError) attempt to write a readonly database")
        except OSError as inner:
            raise MlflowException("(raised as a result of Query-invoked autoflush; ...)") from inner
    except MlflowException as exc:
        fault = exc
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mlflow.get_tracking_uri", lambda: "postgresql://u:pw@db/mlflow")
        assert store_fault(fault) == "the tracking store postgresql://u:***@db/mlflow is read-only"
        fail(fault)
    assert capsys.readouterr().err == (
        "mlflow-pipeline: error: the tracking store postgresql://u:***@db/mlflow is read-only\n"
    )
    assert store_fault(ConfigError("database is locked in the message of our own error")) is None


def test_ctrl_c_is_one_line_and_exit_130_and_a_bug_keeps_its_traceback(capsys):
    from mlflow_pipeline.cli.common import INTERRUPTED, reported

    with pytest.raises(SystemExit) as stopped, reported():
        raise KeyboardInterrupt
    assert stopped.value.code == 130
    assert capsys.readouterr().err == INTERRUPTED + "\n"
    with pytest.raises(ValueError, match="a bug"), reported():
        raise ValueError("a bug")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from mlflow_pipeline.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )


def test_help_lists_the_subcommands_and_the_groups_a_user_chooses_from():
    result = cli("--help")
    assert result.returncode == 0, result.stderr
    for name in ("init", "score", "serve", "simulate", "schedule", "promote", "audit",
                 "reproduce", "example-data", "schema", "tracking-uri"):  # fmt: skip
        assert f"\n {name} " in result.stdout, name
    assert "random_forest" in result.stdout  # model options
    assert "quick_rf" in result.stdout  # this project's own experiment option
    assert "schema/model" not in result.stdout
    assert "hydra/launcher" not in result.stdout


@pytest.mark.parametrize(("word", "hint"), [("scor", "score"), ("sereve", "serve")])
def test_a_mistyped_subcommand_gets_did_you_mean(word: str, hint: str):
    result = cli(word, "models:/x@champion")
    assert result.returncode == 2
    assert f"unknown command '{word}'; did you mean '{hint}'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_subcommand_reports_an_expected_error_one_way(capsys):
    """``exit_code``: the body's code (None: 0); our errors and MLflow's are one line and exit
    1, after ``on_error``; a bug keeps its traceback."""
    from mlflow.exceptions import MlflowException

    from mlflow_pipeline.cli.common import exit_code

    seen: list[BaseException] = []
    assert exit_code(lambda: None) == 0
    assert exit_code(lambda: 3) == 3
    assert exit_code(lambda: (_ for _ in ()).throw(ConfigError("data.target: no column"))) == 1
    assert capsys.readouterr().err == "mlflow-pipeline: error: data.target: no column\n"

    def unknown_model() -> int:
        raise MlflowException("Registered Model with name=x not found")

    assert exit_code(unknown_model, on_error=seen.append) == 1
    assert capsys.readouterr().err == (
        "mlflow-pipeline: error: MLflow: Registered Model with name=x not found\n"
    )
    assert [type(e) for e in seen] == [MlflowException]
    with pytest.raises(ZeroDivisionError, match="division"):
        exit_code(lambda: 1 // 0)


def test_simulate_takes_the_pipeline_overrides():
    """One grammar: `simulate` names its data as a run does; the old flags are aliases."""
    result = cli("simulate", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(
        "usage: mlflow-pipeline simulate --days N [options] data.path=F data.target=T "
        "data.task=K [overrides]"
    )
    assert "deprecated" in result.stdout
    result = cli("simulate", "--days", "3", "data.path=nosuch.csv", "data.target=label",
                 "data.task=classification")  # fmt: skip
    assert result.returncode == 1
    [error] = [line for line in result.stderr.splitlines() if "error" in line]
    assert error.startswith("mlflow-pipeline: error: [ingest] data.path: no file at "), error


def test_init_takes_the_data_settings_of_a_run(tmp_path):
    """`init` names its data as a run does (data.path=...); a mistyped key is refused before
    anything is written; the flags of earlier versions still work, with a note."""
    from mlflow_pipeline.data.examples import write_customers

    csv = write_customers(tmp_path / "customers.csv", 200)
    result = cli("init", str(tmp_path / "my churn"), f"data.path={csv}", "data.target=label",
                 "data.task=classification")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "target label, classification" in result.stdout
    # The line to run next, as a shell reads it (the path has a space) and in the experiment
    # the project's runs share.
    quoted = shlex.quote(str(tmp_path / "my churn"))
    assert (
        f"next: cd {quoted} && mlflow run . --env-manager local --experiment-name my_churn"
    ) in result.stdout
    assert "label" in (tmp_path / "my churn" / "conf" / "contract.yaml").read_text()
    result = cli("init", str(tmp_path / "b"), f"data.path={csv}", "data.targt=label")
    assert result.returncode == 2
    assert "unknown setting 'data.targt=label': init takes data.path, data.target" in (
        result.stderr
    )
    assert not (tmp_path / "b").exists()
    result = cli("init", str(tmp_path / "c"), "--data", str(csv), "--target", "nosuch",
                 "--task", "classification")  # fmt: skip
    assert result.returncode == 1
    assert "--data is deprecated; use data.path=" in result.stderr
    assert "init data.target: no column 'nosuch'" in result.stderr


def test_init_on_data_with_unlabelled_rows_makes_a_project_whose_first_run_passes(
    tmp_path, monkeypatch
):
    """Rows without a target cannot be learnt from: the project quarantines them at validate
    (said at init, in its config), so its first run does not stop there."""
    from hydra import compose, initialize_config_dir

    from mlflow_pipeline.apps.init import conf_dir_of, use_project_code
    from mlflow_pipeline.data.examples import write_customers
    from mlflow_pipeline.stages.ingest import ingest
    from mlflow_pipeline.stages.validate import validate_data

    csv = write_customers(tmp_path / "customers.csv", 200)
    frame = pd.read_csv(csv)
    frame.loc[:2, "label"] = None  # 3 of 200 rows: more than the default 1 % quarantine
    frame.to_csv(csv, index=False)
    result = cli("init", str(tmp_path / "p"), f"data.path={csv}", "data.target=label",
                 "data.task=classification")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "note: data.target 'label' is missing in 3 of 200 rows: they are quarantined at validate "
        "(conf/config.yaml: validation.quarantine, up to 3% of the rows)"
    ) in result.stdout
    root = tmp_path / "p"
    use_project_code(root)
    monkeypatch.setattr("mlflow_pipeline.config.PROJECT_ROOT", root)  # ${project:}, as run there
    with initialize_config_dir(config_dir=str(conf_dir_of(root)), version_base="1.3"):
        cfg = compose(config_name="config")
    validated = validate_data(cfg, ingest(cfg)["raw"])
    assert len(validated["validated"]) == 197
    assert validated["quarantine"] is not None


def test_init_reads_a_european_csv_with_the_read_options_a_run_takes(tmp_path, monkeypatch):
    """vega_datasets' cars as a European spreadsheet saves it (';'-separated, decimal commas,
    latin-1): init refuses it with the settings to add, then takes them (Hydra's grammar, as a
    run does) and writes them into the project, whose own run reads the same table."""
    from hydra import compose, initialize_config_dir
    from vega_datasets import data as vega

    from mlflow_pipeline.apps.init import conf_dir_of, use_project_code
    from mlflow_pipeline.stages.ingest import ingest

    cars = vega.cars().drop(columns=["Year"])
    cars["Name"] = cars["Name"].str.replace("renault", "renault é", regex=False)
    csv = tmp_path / "voitures.csv"
    cars.to_csv(csv, sep=";", decimal=",", index=False, encoding="latin-1")
    data = [f"data.path={csv}", "data.target=Origin", "data.task=classification"]
    result = cli("init", str(tmp_path / "p"), *data)
    assert result.returncode == 1
    assert "it looks ';'-separated; set data.read_options.sep=';'" in result.stderr
    assert not (tmp_path / "p").exists()
    # The shell took the quotes: Hydra's grammar cannot read ';' bare, and init says how to type it.
    result = cli("init", str(tmp_path / "p"), *data, "+data.read_options.sep=;")
    assert result.returncode == 2
    assert "quote the whole setting for the shell: \"+data.read_options.sep=';'\"" in (
        result.stderr
    )
    options = ["+data.read_options.sep=';'", "data.read_options.decimal=','"]
    result = cli("init", str(tmp_path / "p"), *data, *options)
    assert result.returncode == 1
    assert "is not UTF-8 text (byte 0xe9 on line " in result.stderr
    result = cli("init", str(tmp_path / "p"), *data, *options, "data.read_options.encoding=latin-1")
    assert result.returncode == 0, result.stderr
    root = tmp_path / "p"
    assert "read_options: {sep: ;, decimal: ',', encoding: latin-1}" in (
        (root / "conf" / "data" / "p.yaml").read_text()
    )
    use_project_code(root)
    monkeypatch.setattr("mlflow_pipeline.config.PROJECT_ROOT", root)  # ${project:}, as run there
    with initialize_config_dir(config_dir=str(conf_dir_of(root)), version_base="1.3"):
        cfg = compose(config_name="config")
    raw = ingest(cfg)["raw"]
    pd.testing.assert_frame_equal(raw, cars, check_dtype=False)
    assert "float64" in (root / "conf" / "contract.yaml").read_text()


def test_init_refuses_a_target_with_no_values_and_caps_the_quarantine_at_every_row(tmp_path):
    from mlflow_pipeline.apps.init import init_project
    from mlflow_pipeline.data.examples import write_customers

    csv = write_customers(tmp_path / "customers.csv", 200)
    frame = pd.read_csv(csv)
    frame["label"] = None
    frame.to_csv(csv, index=False)
    result = cli("init", str(tmp_path / "p"), f"data.path={csv}", "data.target=label",
                 "data.task=classification")  # fmt: skip
    assert result.returncode == 1
    assert "init data.target: column 'label' of " in result.stderr
    assert "has no values (missing in all 200 rows)" in result.stderr
    assert not (tmp_path / "p").exists()
    # 199 of 200 rows unlabelled: the quarantine may take them all (1.00), not 1.01 of them,
    # which the project's own config check would refuse.
    frame["label"] = [1] + [None] * 199
    frame.to_csv(csv, index=False)
    scaffold = init_project(tmp_path / "q", data=csv, target="label", task="classification")
    assert "max_fraction: 1.00" in (scaffold.root / "conf" / "config.yaml").read_text()


def test_init_notes_a_column_named_as_one_score_writes(tmp_path):
    """A feature named `prediction` trained, and then every file to score was refused."""
    from mlflow_pipeline.apps.init import init_project
    from mlflow_pipeline.data.examples import write_customers

    csv = write_customers(tmp_path / "customers.csv", 200)
    frame = pd.read_csv(csv)
    frame.assign(prediction=frame["income"] > 50, proba_x=0.5).to_csv(csv, index=False)
    scaffold = init_project(tmp_path / "p", data=csv, target="label", task="classification")
    said = [n for n in scaffold.notes if "has the name of a column score writes" in n]
    assert [n.split("'")[1] for n in said] == ["prediction", "proba_x"]
    assert said[0].endswith(
        "rename it in the data, or give it role ignore in conf/data/p.yaml (columns: "
        "{prediction: {role: ignore}}) and leave it out of files to score"
    )


def test_init_refuses_a_target_the_task_cannot_learn(tmp_path):
    from mlflow_pipeline.apps.init import init_project

    csv = tmp_path / "cars.csv"
    pd.DataFrame(
        {
            "mpg": [18.5, 15.0, None, 36.1, 20.0, 22.5] * 5,
            "origin": ["USA", "USA", "USA", "Japan", "Japan", "Europe"] * 5,
        }
    ).to_csv(csv, index=False)
    with pytest.raises(ConfigError) as regression:
        init_project(tmp_path / "p", data=csv, target="origin", task="regression")
    assert str(regression.value) == (
        "init data.task=regression: data.target 'origin' is not numeric (100% of its values "
        "are not numbers: 'USA', 'Japan', 'Europe'); a regression target must be; for "
        "classes, use data.task=classification"
    )
    with pytest.raises(ConfigError) as classification:
        init_project(tmp_path / "q", data=csv, target="mpg", task="classification")
    assert str(classification.value) == (
        "init data.task=classification: data.target 'mpg' holds fractions (15 of 25 values, "
        "e.g. 18.5; 5 distinct values): each would be a class; for a quantity, use "
        "data.task=regression"
    )
    assert not (tmp_path / "p").exists()
    assert not (tmp_path / "q").exists()


def test_init_says_which_categories_may_not_be_categories(tmp_path):
    """score refuses a category training never saw: a column of mostly distinct codes would
    have most new rows refused, and a column of mostly numbers is a measurement with junk in
    it; init says so and what to do."""
    from mlflow_pipeline.apps.init import init_project

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "code": [f"M{i:03d}" for i in range(60)] + ["X"] * 20,  # one word, 61 distinct
            "name": [f"ford model {i}" for i in range(60)] + ["chevy nova"] * 20,  # text
            "plan": ["a", "b"] * 40,
            "power": ["high"] * 9 + [str(v) for v in range(71)],  # 88.8 % numbers: a category
            "amount": rng.normal(size=80),
            "label": [0, 1] * 40,
        }
    )
    csv = tmp_path / "cars.csv"
    frame.to_csv(csv, index=False)
    scaffold = init_project(tmp_path / "p", data=csv, target="label", task="classification")
    numbers = [n for n in scaffold.notes if "numbers and" in n]
    assert numbers == [
        "column 'power' is 88.8% numbers and 11.3% other values ('high'): inferred a category, "
        "each number a level; if it is a measurement, clean those values, or in conf/contract.yaml "
        "give it dtype float64 and description 'role=numeric' so that validate reports them"
    ]
    notes = [n for n in scaffold.notes if "distinct values" in n]
    assert len(notes) == 1
    assert notes[0].startswith("column 'code' is a category with 61 distinct values in 80 rows")
    assert "conf/data/p.yaml (columns: {code: {role: ignore}}, or role text or id)" in notes[0]
    contract = (scaffold.root / "conf" / "contract.yaml").read_text()
    assert "role=text; inferred: short free text: 61 distinct in 80 rows" in contract


def test_init_refuses_numbers_whose_separators_the_read_options_do_not_declare(tmp_path):
    """Decimal commas read as text (each number a category), US thousands separators too, and
    a thousands dot beside a decimal comma read as a number a thousand times too small: init
    names the columns and the read option to add; a role given keeps a column as it is."""
    from vega_datasets import data as vega

    from mlflow_pipeline.apps.init import init_project

    cars = vega.cars().drop(columns=["Year", "Name"]).head(120)
    csv = tmp_path / "cars.csv"
    cars.to_csv(csv, sep=";", decimal=",", index=False)
    european = {"sep": ";"}
    with pytest.raises(ConfigError) as refused:
        init_project(tmp_path / "p", data=csv, target="Origin", task="classification",
                     read_options=european)  # fmt: skip
    assert (
        "  - 'Miles_per_Gallon' ('18,0'), 'Displacement' ('307,0'), 'Horsepower' ('130,0'), "
        "'Acceleration' ('12,0'): add \"+data.read_options.decimal=','\""
    ) in str(refused.value)
    assert not (tmp_path / "p").exists()
    thousands = cars.assign(Weight_in_lbs=cars["Weight_in_lbs"].map("{:,}".format))
    thousands.to_csv(csv, index=False)  # "3,504": US thousands
    with pytest.raises(ConfigError, match=r"'Weight_in_lbs' \('3,504'\): add .*thousands=','"):
        init_project(tmp_path / "p", data=csv, target="Origin", task="classification")
    dotted = thousands.assign(Weight_in_lbs=thousands["Weight_in_lbs"].str.replace(",", "."))
    dotted.to_csv(csv, sep=";", decimal=",", index=False)  # "3.504" beside "18,0"
    european["decimal"] = ","
    with pytest.raises(ConfigError, match=r"'Weight_in_lbs' \('3.504'\): add .*thousands='\.'"):
        init_project(tmp_path / "p", data=csv, target="Origin", task="classification",
                     read_options=european)  # fmt: skip
    scaffold = init_project(tmp_path / "p", data=csv, target="Origin", task="classification",
                            read_options={**european, "thousands": "."})  # fmt: skip
    contract = contract_from_yaml((scaffold.root / "conf" / "contract.yaml").read_text())
    assert contract.columns["Weight_in_lbs"].dtype.type == np.int64
    kept = init_project(tmp_path / "q", data=csv, target="Origin", task="classification",
                        read_options=european,
                        columns={"Weight_in_lbs": {"role": "categorical"}})  # fmt: skip
    assert kept.root.is_dir()


def test_init_takes_the_roles_its_notes_suggest(tmp_path):
    """A role given to init (data.columns.<column>.role, as a run takes it) decides the
    contract, is kept in the project's data config and silences the note; a role for a column
    the file does not have, or a word that is no role, is refused and nothing is written."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "code": [f"M{i:03d}" for i in range(60)] + ["X"] * 20,
            "power": ["high"] * 9 + [str(v) for v in range(71)],
            "Numéro": range(80),  # a name Hydra's grammar cannot hold as a key
            "amount": rng.normal(size=80),
            "label": [0, 1] * 40,
        }
    )
    csv = tmp_path / "cars.csv"
    frame.to_csv(csv, index=False)
    data = [f"data.path={csv}", "data.target=label", "data.task=classification"]
    for wrong, said in [
        ("data.columns.nosuch.role=text", "data.columns.nosuch: no feature column 'nosuch'"),
        ("data.columns.code.role=texts", "data.columns.code.role: 'texts' is not a role"),
        ("data.columns.label.role=ignore", "data.columns.label: 'label' is the target"),
    ]:
        result = cli("init", str(tmp_path / "p"), *data, wrong)
        assert result.returncode == 1
        assert said in result.stderr
        assert not (tmp_path / "p").exists()
    roles = ["data.columns.code.role=id", "+data.columns.power=numeric", "data.columns.Numéro=id"]
    result = cli("init", str(tmp_path / "p"), *data, *roles)
    assert result.returncode == 0, result.stderr
    notes = [line.strip() for line in result.stdout.splitlines() if "note:" in line]
    assert notes == [  # the role chosen stands; validate will report the other values
        "note: data.columns.power.role=numeric: 9 of 80 value(s) present are not numbers "
        "('high'); validate stops at check coerce_dtype('float64') on them; if they mean "
        "'missing', read them as missing: \"+data.read_options.na_values=['high']\""
    ]
    conf = tmp_path / "p" / "conf"
    assert "columns: {code: {role: id}, power: {role: numeric}, Numéro: {role: id}}" in (
        (conf / "data" / "p.yaml").read_text()
    )
    contract = contract_from_yaml((conf / "contract.yaml").read_text())
    assert contract.columns["power"].dtype.type == np.float64
    assert contract.columns["code"].description.startswith("role=id; data.columns.code.role")
    assert contract.columns["Numéro"].description.startswith("role=id; data.columns.Numéro.role")


def test_init_refuses_a_role_the_values_contradict(tmp_path):
    """A numeric role on names, a datetime role on numbers, and text inferred numeric with
    '?' for missing values (validate would stop at its first run): init refuses, naming the
    column, the values and the setting that fixes it, and writes nothing; with that setting
    the project is made and its contract reads those values as missing."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=120).round(3).astype(str)
    z[::17] = "?"
    frame = pd.DataFrame(
        {
            "name": [f"n{i % 37}" for i in range(120)],
            "x": rng.normal(size=120),
            "when": pd.date_range("2020-01-01", periods=120).astype(str),
            "z": z,
            "label": [0, 1] * 60,
        }
    )
    csv = tmp_path / "d.csv"
    frame.to_csv(csv, index=False)
    data = [f"data.path={csv}", "data.target=label", "data.task=classification"]
    na = "\"+data.read_options.na_values=['?']\""
    for roles, said in [
        (
            ["data.columns.name.role=numeric", na],
            "data.columns.name.role=numeric: 120 of 120 value(s) present are not numbers "
            "('n0', 'n1', 'n2'); validate stops at check coerce_dtype('float64') on them\n",
        ),
        (
            ["data.columns.x.role=datetime", "data.columns.when.role=datetime", na],
            "data.columns.x.role=datetime: 120 of 120 value(s) present are not dates",
        ),
        (
            [],
            "column 'z' (inferred numeric: text that is mostly numbers): 8 of 120 value(s) "
            "present are not numbers ('?'); validate stops at check coerce_dtype('float64') on "
            f"them; if they mean 'missing', read them as missing: {na}",
        ),
    ]:
        result = cli("init", str(tmp_path / "p"), *data, *[r.strip('"') for r in roles])
        assert result.returncode == 1
        assert said in result.stderr
        assert "data.columns.when" not in result.stderr  # its dates fit
        assert not (tmp_path / "p").exists()
    result = cli("init", str(tmp_path / "p"), *data, na.strip('"'))
    assert result.returncode == 0, result.stderr
    contract = contract_from_yaml((tmp_path / "p" / "conf" / "contract.yaml").read_text())
    assert contract.columns["z"].dtype.type == np.float64


def test_a_sweep_jobs_log_lines_say_whose_they_are():
    """Every line a job logs, a traceback's too, starts with ``[job N]`` in the handler's own
    format; a process that runs a second job switches to its number."""
    import io
    import logging

    from mlflow_pipeline.cli.common import LOG_FORMAT, prefix_job_logs

    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        prefix_job_logs(3)
        logging.getLogger("mlflow_pipeline.engine.stage").warning("stage train: cache miss")
        prefix_job_logs(4)
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("x").exception("two\nlines")
    finally:
        root.handlers[:] = saved
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[job 3] ")
    assert lines[0].endswith(" WARNING mlflow_pipeline.engine.stage: stage train: cache miss")
    assert len(lines) > 3
    assert all(line.startswith("[job 4] ") for line in lines[1:]), lines
    assert lines[-1] == "[job 4] ValueError: bad"
