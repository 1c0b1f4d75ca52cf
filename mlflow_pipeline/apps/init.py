"""``mlflow-pipeline init DIR``: a new project that runs at once (``cd DIR && mlflow run .
--env-manager local`` reaches a champion), with one example stage and one example feature
transformer of its own, an inferred and editable data contract, and a smoke test."""

from __future__ import annotations

import keyword
import math
import re
import shlex
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from mlflow_pipeline.config import Task, conf_dir_of, use_project_code
from mlflow_pipeline.errors import ConfigError

# The example data a project starts with when no data.path is given.
EXAMPLE_FILE = "customers.csv"
EXAMPLE_TARGET = "label"
# Pinned in the project's requirements.txt: this package and what it runs on.
PINNED = ("mlflow-pipeline", "mlflow", "hydra-core", "pandera", "pandas", "scikit-learn", "skops")


@dataclass(frozen=True)
class Scaffold:
    """What ``init`` made: the project, its package, the data it reads and its stages."""

    root: Path
    package: str
    data: Path
    target: str
    task: str
    stages: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        notes = "".join(f"  note: {note}\n" for note in self.notes)
        return (
            f"created project {self.package} in {self.root}\n"
            f"  data: {self.data} (target {self.target}, {self.task})\n"
            f"  stages: {' -> '.join(self.stages)}\n"
            f"{notes}"
            f"  next: cd {shlex.quote(str(self.root))} && mlflow run . --env-manager local "
            f"--experiment-name {self.package}"
        )


def package_name(directory: Path) -> str:
    """A Python package name from the project directory's name (``My-Churn`` -> ``my_churn``)."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", directory.name).strip("_").lower() or "project"
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"project_{name}"
    return name


def init_project(
    directory: str | Path,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    task: str | None = None,
    read_options: dict[str, Any] | None = None,
    columns: dict[str, Any] | None = None,
) -> Scaffold:
    """Write a new project into ``directory`` (which must not exist or be empty).

    Without ``data`` the project gets the example customer table. ``read_options``: how
    pandas reads the file (``data.read_options``); ``columns``: roles chosen for some columns
    (``data.columns``, ``{name: {role: text}}``), which the contract follows; both are kept in
    the project's data config. Raises ConfigError for an existing non-empty directory, a
    missing data file, target or task, a role on an unknown column or an unknown role, and
    DataError for a file the read options do not read. Nothing is written when it raises.
    """
    root = Path(directory).resolve()
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"init: {root} exists and is not empty; choose a new directory")
    package = package_name(root)
    source, target, task = _data_source(data, target, task)
    read_options = dict(read_options or {})
    frame = _read(source, target, read_options)
    columns = dict(columns or {})
    _check_number_formats(source, frame, target, read_options, columns)
    role_notes = _check_roles(frame, target, columns)
    _check_task(frame[target], target, Task(task))
    files = _files(package, source.name, target, task, frame, read_options, columns)
    notes = _role_notes(frame, target, package, columns) + role_notes
    notes += _output_name_notes(frame, target, package)
    unlabelled = int(frame[target].isna().sum())
    if unlabelled:  # rows no model can learn from: set aside at validate, not a failed run
        share = min(math.ceil(100 * unlabelled / len(frame)) / 100 + 0.01, 1.0)
        files["conf/config.yaml"] += UNLABELLED.format(
            target=target, rows=unlabelled, total=len(frame), share=f"{share:.2f}"
        )
        notes += (
            f"data.target {target!r} is missing in {unlabelled} of {len(frame)} rows: they are "
            f"quarantined at validate (conf/config.yaml: validation.quarantine, up to {share:.0%} "
            "of the rows), logged as quarantine/raw.csv",
        )
    root.mkdir(parents=True, exist_ok=True)
    data_path = root / "data" / source.name
    data_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, data_path)
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    stages = _stage_names(root)
    (root / "MLproject").write_text(mlproject(package, stages), encoding="utf-8")
    return Scaffold(root, package, data_path, target, task, stages, notes)


# A column inferred categorical whose values are at least this share numbers gets a note (at
# schemas.NUMERIC_TEXT_FRACTION it is inferred numeric).
MOSTLY_NUMBERS_NOTE = 0.5


def _role_notes(
    frame: pd.DataFrame, target: str, package: str, columns: dict[str, Any]
) -> tuple[str, ...]:
    """A note per column inferred categorical that may not be one (``columns``: roles chosen,
    not noted): mostly distinct values (score and serve refuse a category training never
    saw, so most new rows would be refused), or mostly numbers (a measurement with junk in
    it: each number a category)."""
    from mlflow_pipeline.schemas import (
        TEXT_DISTINCT_FRACTION,
        TEXT_MIN_DISTINCT,
        column_roles,
        number_share,
    )

    notes = []
    for name, role in column_roles(frame, target, columns).items():
        if role.role != "categorical" or not role.inferred:
            continue
        distinct = int(frame[name].nunique())
        rows = int(frame[name].notna().sum())
        share, others = number_share(frame[name])
        if share >= MOSTLY_NUMBERS_NOTE:
            shown = ", ".join(map(repr, others))
            notes.append(
                f"column {name!r} is {share:.1%} numbers and {1 - share:.1%} other values "
                f"({shown}): inferred a category, each number a level; if it is a measurement, "
                "clean those values, or in conf/contract.yaml give it dtype float64 and "
                "description 'role=numeric' so that validate reports them"
            )
        elif distinct >= max(TEXT_MIN_DISTINCT, TEXT_DISTINCT_FRACTION * rows):
            notes.append(
                f"column {name!r} is a category with {distinct} distinct values in {rows} rows: "
                "score and serve refuse a value training never saw; if new ones are expected, "
                f"give it another role in conf/data/{package}.yaml (columns: {{{name}: {{role: "
                "ignore}}, or role text or id)"
            )
    return tuple(notes)


def _output_name_notes(frame: pd.DataFrame, target: str, package: str) -> tuple[str, ...]:
    """A note per column named as a column score writes (``prediction``, ``proba_<x>``,
    ``model_version``): score refuses an input that has one, so the model would train but
    never score a file that carries it."""
    from mlflow_pipeline.apps.score import MODEL_VERSION, PREDICTION, PROBA_PREFIX

    clashing = [
        str(name)
        for name in frame.columns
        if name != target
        and (name in (PREDICTION, MODEL_VERSION) or str(name).startswith(PROBA_PREFIX))
    ]
    return tuple(
        f"column {name!r} has the name of a column score writes, and score refuses a file to "
        f"score that has it: rename it in the data, or give it role ignore in "
        f"conf/data/{package}.yaml (columns: {{{name}: {{role: ignore}}}}) and leave it out of "
        "files to score"
        for name in clashing
    )


def _data_source(
    data: str | Path | None, target: str | None, task: str | None
) -> tuple[Path, str, str]:
    if data is None:
        from tempfile import mkdtemp

        from mlflow_pipeline.data.examples import write_customers

        source = write_customers(Path(mkdtemp(prefix="mlflow-pipeline-init-")) / EXAMPLE_FILE, 600)
        return source, target or EXAMPLE_TARGET, task or Task.classification.value
    source = Path(data)
    if not source.is_file():
        raise ConfigError(f"init data.path: no file {source}")
    if not target:
        raise ConfigError("init: data.path needs data.target (the column to predict)")
    if task not in (t.value for t in Task):
        raise ConfigError("init: data.path needs data.task=classification or data.task=regression")
    return source.resolve(), target, task


def _check_task(values: pd.Series, target: str, task: Task) -> None:
    """Raises ConfigError for a target that cannot be the task's: text to regress on, or
    fractions to classify (each value a class: the split fails on classes of one row)."""
    from mlflow_pipeline.schemas import number_share

    present = values.dropna()
    if task is Task.regression and not pd.api.types.is_numeric_dtype(present):
        share, others = number_share(present)
        if share < 1.0:
            raise ConfigError(
                f"init data.task=regression: data.target '{target}' is not numeric "
                f"({1 - share:.0%} of its values are not numbers: {', '.join(map(repr, others))}); "
                "a regression target must be; for classes, use data.task=classification"
            )
    if task is Task.classification and pd.api.types.is_float_dtype(present):
        fractions = present[present != present.round()]
        if len(fractions):
            raise ConfigError(
                f"init data.task=classification: data.target '{target}' holds fractions "
                f"({len(fractions)} of {len(present)} values, e.g. {fractions.iloc[0]:g}; "
                f"{present.nunique()} distinct values): each would be a class; for a quantity, "
                "use data.task=regression"
            )


# Numbers as spreadsheets outside the English-speaking world write them, and with thousands
# separators: a column of them is read as text (each number a category) or, with a decimal
# comma and a thousands dot, as numbers a thousand times too small.
DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")
THOUSANDS_COMMA = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
THOUSANDS_DOT = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$")
WHOLE = re.compile(r"^[+-]?\d+$")
# A column is taken for numbers in such a form when this share of its values are (whole
# numbers count too: "18" beside "18,5").
NUMBER_FORMAT_SHARE = 0.9


def _check_number_formats(
    source: Path,
    frame: pd.DataFrame,
    target: str,
    read_options: dict[str, Any],
    columns: dict[str, Any],
) -> None:
    """Raises ConfigError naming the columns and the read option to set when columns hold
    numbers with decimal commas or thousands separators that the read options do not
    declare: read as text they would become categories, each number a level; with a decimal
    comma, "3.504" (three thousand) would be read as 3.504. A role given in ``columns`` keeps
    such a column as it is."""
    found: dict[str, list[str]] = {}
    thousands_dot = "\"+data.read_options.thousands='.'\""
    european = read_options.get("decimal") == "," and "thousands" not in read_options
    text = [
        name
        for name in frame.columns
        if name not in columns
        and not pd.api.types.is_numeric_dtype(frame[name])
        and not pd.api.types.is_bool_dtype(frame[name])
    ]
    for name in text:
        values = frame[name].dropna().astype(str).str.strip()
        if values.empty:
            continue
        comma = values.str.contains(",", regex=False)
        dotted = values.str.contains(".", regex=False)
        if european and dotted.any():
            # With a decimal comma, "3.504" is three thousand: pandas reads such a column as
            # text, and the contract's coercion makes it 3.504.
            shaped = values.str.fullmatch(THOUSANDS_DOT) | values.str.fullmatch(WHOLE)
            if shaped.mean() >= NUMBER_FORMAT_SHARE:
                found.setdefault(thousands_dot, []).append(f"{name!r} ({values[dotted].iloc[0]!r})")
            continue
        if not comma.any():
            continue
        if values[comma].str.fullmatch(THOUSANDS_COMMA).all():
            setting, pattern = "\"+data.read_options.thousands=','\"", THOUSANDS_COMMA
        else:
            setting, pattern = "\"+data.read_options.decimal=','\"", DECIMAL_COMMA
        shaped = values.str.fullmatch(pattern) | values.str.fullmatch(WHOLE)
        if shaped.mean() >= NUMBER_FORMAT_SHARE:
            found.setdefault(setting, []).append(f"{name!r} ({values[comma].iloc[0]!r})")
    if european:
        numeric = [n for n in frame.columns if n not in columns and frame[n].dtype.kind == "f"]
        if numeric:
            from mlflow_pipeline.stages.ingest import read_csv

            raw = read_csv(source, {**read_options, "dtype": str, "usecols": numeric})
            for name in numeric:
                values = raw[name].dropna().str.strip()
                dotted = values.str.contains(".", regex=False)
                if dotted.any() and values[dotted].str.fullmatch(THOUSANDS_DOT).all():
                    found.setdefault(thousands_dot, []).append(
                        f"{name!r} ({values[dotted].iloc[0]!r})"
                    )
    if found:
        lines = [f"  - {', '.join(names)}: add {setting}" for setting, names in found.items()]
        raise ConfigError(
            "init: columns hold numbers written with separators the read options do not "
            "declare; read as they are, they would be text (each number a category) or numbers "
            "a thousand times too small:\n" + "\n".join(lines) + "\n  (on the command line, "
            "quote a value with ',' or '.' and the whole setting for the shell; to keep such a "
            "column as it is, give it a role: data.columns.<column>.role=categorical)"
        )


# A role is refused when more than this share of a column's values contradict it (fewer: a
# numeric column's others are noted, a datetime column's unparseable values kept and counted
# by the drift check).
CONTRADICTED_SHARE = 0.5


def _check_roles(frame: pd.DataFrame, target: str, columns: dict[str, Any]) -> tuple[str, ...]:
    """Raises ConfigError, naming the columns and values, when a column's role does not fit
    its values: numeric or integer given to a column mostly not numbers, or inferred for text
    that is mostly numbers with other values in it ("?", "-": validate would stop at check
    coerce_dtype); datetime given to a column mostly not dates (each date part would be
    missing). Returns a note per numeric role given to a column with a few other values
    (validate reports them). Also raises for a role on an unknown column, or an unknown role.
    """
    from mlflow_pipeline.data.validation import MISSING_MARKERS
    from mlflow_pipeline.schemas import column_roles, not_a_date

    problems, notes = [], []
    for name, role in column_roles(frame, target, columns).items():
        values = frame[name].dropna()
        if role.role in ("numeric", "integer") and not pd.api.types.is_numeric_dtype(values):
            text = values.astype(str).str.strip()
            others = text[pd.to_numeric(text, errors="coerce").isna()].value_counts()
            what = "numbers"
        elif role.role == "datetime" and not role.inferred:
            others = values[not_a_date(values)].astype(str).value_counts()
            what = "dates"
        else:
            continue
        count = int(others.sum())
        if not count:
            continue
        found = (
            f"{count} of {len(values)} value(s) present are not {what} "
            f"({', '.join(map(repr, others.index[:3]))})"
        )
        if role.inferred:
            setting = f"column {name!r} (inferred {role.role}: {role.reason})"
        else:
            setting = f"data.columns.{name}.role={role.role}"
        if what == "dates":
            found += "; each date part of them would be missing"
        else:
            found += "; validate stops at check coerce_dtype('float64') on them"
            if len(others) <= MISSING_MARKERS and count < len(values):
                marks = ", ".join(map(repr, others.index))
                found += (
                    "; if they mean 'missing', read them as missing: "
                    f'"+data.read_options.na_values=[{marks}]"'
                )
        if count > CONTRADICTED_SHARE * len(values) or (role.inferred and what == "numbers"):
            problems.append(f"  - {setting}: {found}")
        elif what == "numbers":
            notes.append(f"{setting}: {found}")
    if problems:
        raise ConfigError(
            "init: a column's role does not fit its values:\n"
            + "\n".join(problems)
            + "\n  (or give the column a role its values fit: "
            "data.columns.<column>.role=numeric, integer, categorical, datetime, text, id or "
            "ignore)"
        )
    return tuple(notes)


def _flow_yaml(mapping: dict[str, Any]) -> str:
    """``mapping`` as one line of YAML (``{sep: ;, decimal: ','}``)."""
    import yaml

    return yaml.safe_dump(
        mapping, default_flow_style=True, sort_keys=False, width=10**6, allow_unicode=True
    ).strip()


def _read(source: Path, target: str, read_options: dict[str, Any]) -> pd.DataFrame:
    from mlflow_pipeline.stages.ingest import read_csv

    frame = read_csv(source, read_options)
    if target not in frame.columns:
        raise ConfigError(
            f"init data.target: no column '{target}' in {source} (columns: "
            f"{', '.join(map(str, frame.columns[:20]))})"
        )
    if frame[target].isna().all():
        raise ConfigError(
            f"init data.target: column '{target}' of {source} has no values (missing in all "
            f"{len(frame)} rows): there is nothing to learn; choose the column to predict"
        )
    return frame


def _stage_names(root: Path) -> tuple[str, ...]:
    """The project's stages in order, from its own config (its pipeline declaration)."""
    from hydra import compose, initialize_config_dir

    from mlflow_pipeline.engine.pipeline import build_pipeline

    use_project_code(root)
    with initialize_config_dir(config_dir=str(conf_dir_of(root)), version_base="1.3"):
        cfg = compose(config_name="config")
    return tuple(s.name for s in build_pipeline(cfg.pipeline).order())


def _files(
    package: str,
    data_file: str,
    target: str,
    task: str,
    frame: pd.DataFrame,
    read_options: dict,
    columns: dict,
) -> dict:
    from mlflow_pipeline.schemas import contract_to_yaml, infer_contract

    contract = contract_to_yaml(infer_contract(frame, target, Task(task), columns))
    return {
        "conf/config.yaml": CONFIG.format(package=package),
        f"conf/data/{package}.yaml": DATA.format(
            package=package,
            data_file=data_file,
            target=target,
            task=task,
            read_options=_flow_yaml(read_options),
            columns=f"columns: {_flow_yaml(columns)}\n" if columns else "",
        ),
        "conf/contract.yaml": CONTRACT_HEADER + contract,
        f"conf/pipeline/{package}.yaml": PIPELINE.format(package=package),
        f"conf/features/{package}.yaml": FEATURES.format(package=package),
        f"src/{package}/__init__.py": f'"""The {package} project\'s own code."""\n',
        f"src/{package}/stages.py": STAGES,
        f"src/{package}/features.py": FEATURES_CODE,
        "tests/test_smoke.py": SMOKE_TEST.format(package=package),
        "python_env.yaml": PYTHON_ENV,
        "pyproject.toml": PYPROJECT.format(package=package),
        "requirements.txt": requirements(),
        "README.md": README.format(package=package, data_file=data_file, target=target),
        ".gitignore": GITIGNORE,
    }


def requirements() -> str:
    """This package and what it runs on, pinned to the versions installed here."""
    lines = ["# Pinned by mlflow-pipeline init: the versions it was created with."]
    for name in PINNED:
        try:
            lines.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            lines.append(name)
    return "\n".join(lines) + "\n"


def mlproject(package: str, stages: tuple[str, ...]) -> str:
    """The MLproject: ``main``, one entry point per stage, and ``score``."""
    parts = [MLPROJECT_HEAD.format(package=package)]
    for name in stages:
        parts.append(MLPROJECT_STAGE.format(stage=name))
    parts.append(MLPROJECT_SCORE.format(package=package))
    return "".join(parts)


CONFIG = """\
# The project's config: mlflow-pipeline's defaults (pkg://mlflow_pipeline.conf), then what this
# project chooses. Add options of your own under conf/<group>/ (conf/model/my_model.yaml, ...)
# and pick them here or on the command line (model=my_model).
defaults:
  - mlflow_pipeline
  - override data: {package}
  - override pipeline: {package}
  - override features: {package}
  - _self_

hydra:
  searchpath:
    - pkg://mlflow_pipeline.conf
"""

UNLABELLED = """
# {rows} of {total} rows have no {target} (found by mlflow-pipeline init): no model learns from
# them, so validate sets rows that break the contract aside (quarantine/raw.csv of its run)
# instead of stopping the run, up to this share of the rows.
validation:
  quarantine:
    enabled: true
    max_fraction: {share}
"""

DATA = """\
# The project's data. ${{project:}} is the project's root directory, wherever you run from.
name: {package}
source: csv
path: ${{project:}}/data/{data_file}
target: {target}
task: {task}
# The data contract, inferred by mlflow-pipeline init: edit it (checks, nullable, columns).
schema: ${{project:}}/conf/contract.yaml
read_options: {read_options}
ignore_columns: []
{columns}"""

CONTRACT_HEADER = """\
# The data contract (pandera YAML), inferred from the data by mlflow-pipeline init. Every stage
# boundary validates against it: edit the checks, nullability and columns as you learn the data.
"""

PIPELINE = """\
# The project's pipeline: the reference pipeline with one stage of its own, `clean`, between
# split and train. A stage is a function in src/{package}/ (see stages.py) with named inputs and
# outputs; the engine derives the order, caches each stage and logs it as its own MLflow run.
defaults:
  - reference
  - _self_

name: {package}
datasets:
  clean_train: {{kind: frame, schema: mlflow_pipeline.reference.contract_schema}}
stages:
  clean:
    _target_: {package}.stages.drop_outliers
    inputs: {{train: train}}
    schema_inputs: [contract]
    outputs: [clean_train]
    config_keys: [data]
    file_keys: [data.schema]  # its content counts, not where it is
    ignore_keys: [data.path]  # the data reaches this stage as its input
  # train now learns from the cleaned rows (its `train` argument reads clean_train).
  train:
    inputs: {{train: clean_train}}
"""

FEATURES = """\
# The project's features: the standard ones, after the project's own transformer
# (src/{package}/features.py), which is part of the logged model and so runs when it serves.
defaults:
  - standard
  - _self_

name: {package}
transformers:
  - _target_: {package}.features.ClipExtremes
    quantile: 0.01
"""

STAGES = '''\
"""The project's own stages: pure functions from DataFrames (and the config) to DataFrames."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig


def drop_outliers(cfg: DictConfig, train: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Drop training rows with a numeric feature more than 4 standard deviations from its mean.

    Only the training rows: the test set, and the rows the model scores later, stay as they come.
    """
    features = train.drop(columns=[cfg.data.target]).select_dtypes("number")
    z = (features - features.mean()) / features.std(ddof=0).replace(0, 1)
    keep = ~(z.abs() > 4).any(axis=1)
    return {"clean_train": train[keep].reset_index(drop=True)}
'''

FEATURES_CODE = '''\
"""The project's own feature transformer: fitted with the model, logged with it, and so applied
the same way when the model scores or serves."""

from __future__ import annotations

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


class ClipExtremes(TransformerMixin, BaseEstimator):
    """Clip every numeric column to its [quantile, 1 - quantile] range seen in training."""

    def __init__(self, quantile: float = 0.01) -> None:
        self.quantile = quantile

    def fit(self, X: pd.DataFrame, y=None) -> ClipExtremes:
        numeric = X.select_dtypes("number")
        self.low_ = numeric.quantile(self.quantile).to_dict()
        self.high_ = numeric.quantile(1 - self.quantile).to_dict()
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        out = X.copy()
        for column, low in self.low_.items():
            out[column] = out[column].clip(low, self.high_[column])
        return out
'''

SMOKE_TEST = '''\
"""A quick check that the project's config composes, its pipeline builds and its own code runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from mlflow_pipeline.engine.pipeline import build_pipeline

ROOT = Path(__file__).resolve().parents[1]


def config():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config")


def test_the_pipeline_builds_with_the_project_stage():
    pipeline = build_pipeline(config().pipeline)
    names = [s.name for s in pipeline.order()]
    assert names.index("split") < names.index("clean") < names.index("train")


def test_the_project_stage_and_transformer_run_on_the_data():
    from {package}.features import ClipExtremes
    from {package}.stages import drop_outliers

    cfg = config()
    frame = pd.read_csv(cfg.data.path)
    cleaned = drop_outliers(cfg, frame)["clean_train"]
    assert 0 < len(cleaned) <= len(frame)
    features = frame.drop(columns=[cfg.data.target])
    clipped = ClipExtremes().fit(features).transform(features)
    assert list(clipped.columns) == list(features.columns)
'''

PYPROJECT = """\
[project]
name = "{package}"
version = "0.1.0"
requires-python = ">=3.11"
dynamic = ["dependencies"]

[tool.setuptools.dynamic]
dependencies = {{file = ["requirements.txt"]}}

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
# The project's own code, importable in its tests as it is when the pipeline runs.
pythonpath = ["src"]
testpaths = ["tests"]
"""

PYTHON_ENV = """\
# For --env-manager uv/virtualenv: the pinned requirements (requirements.txt).
python: "3.11"
build_dependencies:
  - pip
dependencies:
  - -r requirements.txt
"""

README = """\
# {package}

An [mlflow-pipeline](https://pypi.org/project/mlflow-pipeline/) project: tabular ML from
`data/{data_file}` (target `{target}`) to a champion in the MLflow registry.

```bash
mlflow run . --env-manager local --experiment-name {package}  # the whole pipeline
mlflow run . --env-manager local --experiment-name {package} -e train  # one stage on its own
mlflow-pipeline model=random_forest       # the same as a Hydra app, with overrides
mlflow-pipeline --dry-run                 # what would run, and why
pytest                                    # the smoke test
mlflow ui --backend-store-uri sqlite:///mlflow.db   # the runs, datasets and registry
```

- Run again, and every stage is a cache hit, except `profile` after a new champion (it compares
  the data with the champion's). `--experiment-name {package}` is the experiment
  `mlflow-pipeline` uses: without it `mlflow run` uses `Default`, whose runs (and cache) are
  its own.
- A model that misses `evaluation.thresholds` (by default roc_auc >= 0.75 for classification,
  r2 >= 0 for regression) stops before the registry, with the metric and the bound named; on
  data that cannot reach it, set the bound in `conf/config.yaml`.
- `conf/config.yaml` picks this project's options; `conf/data/{package}.yaml` is the data,
  `conf/contract.yaml` its contract (inferred: edit it), `conf/pipeline/{package}.yaml` the
  stages, `conf/features/{package}.yaml` the features.
- `src/{package}/stages.py` holds the project's own stage (`clean`), `src/{package}/features.py`
  its feature transformer. Edit them: the next run reruns exactly the stages they reach.
- Runs and models live in this directory's store (`mlflow.db`, `mlruns/`), wherever you run
  from. `export MLFLOW_TRACKING_URI=$(mlflow-pipeline tracking-uri)` points other tools at it.
"""

GITIGNORE = """\
mlflow.db
mlflow.db.lock
mlruns/
.mlflow_pipeline/
outputs/
multirun/
__pycache__/
*.egg-info/
"""

MLPROJECT_HEAD = """\
name: {package}

python_env: python_env.yaml

entry_points:
  # The whole pipeline (or the listed steps), one child run per stage.
  main:
    parameters:
      steps: {{type: string, default: all}}
      hydra_options: {{type: string, default: ""}}
    command: "python -m mlflow_pipeline.cli main --steps {{steps}} --hydra-options {{hydra_options}}"

  # One entry point per stage: the stage on its own (inputs from the newest finished runs, or
  # from upstream_run_id).
"""

MLPROJECT_STAGE = """\
  {stage}:
    parameters:
      hydra_options: {{type: string, default: ""}}
      pipeline_run_id: {{type: string, default: ""}}
      upstream_run_id: {{type: string, default: ""}}
    command: "python -m mlflow_pipeline.cli {stage} --hydra-options {{hydra_options}} --pipeline-run-id {{pipeline_run_id}} --upstream-run-id {{upstream_run_id}}"
"""

MLPROJECT_SCORE = """\

  # Batch scoring of a CSV file with a registered version, validated against its contract.
  score:
    parameters:
      model_uri: {{type: string, default: "models:/{package}@champion"}}
      input: path
      output: string
    command: "python -m mlflow_pipeline.cli score {{model_uri}} --input {{input}} --output {{output}}"
"""
