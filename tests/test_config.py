"""Config composition: every option of every group composes and instantiates; typos fail early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from sklearn.base import BaseEstimator

from mlflow_pipeline.config import (
    CONF_DIR,
    PACKAGE_CONF,
    Task,
    check_config,
    column_setting,
    dataset_name,
    flatten,
    hydra_quote,
    load_config,
    promotion_metric,
    resolved_yaml,
    setting_value,
    split_overrides,
)
from mlflow_pipeline.engine.pipeline import load_pipeline
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.stages.train import build_estimator

# Values a group option needs before it composes (required `???` keys).
REQUIRED_FOR = {
    ("data", "csv"): ["data.path=some/file.csv", "data.target=y", "data.task=classification"],
}


def group_options() -> list[tuple[str, str]]:
    """Every (group, option) of the package's defaults and of this project's conf/, read from
    disk so a new option is tested at once."""
    return sorted(
        {
            (group.name, option.stem)
            for conf in (PACKAGE_CONF, CONF_DIR)
            for group in conf.iterdir()
            if group.is_dir() and group.name != "__pycache__"
            for option in group.glob("*.yaml")
        }
    )


def option_overrides(group: str, option: str) -> list[str]:
    return [f"{group}={option}", *REQUIRED_FOR.get((group, option), [])]


def targets(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every ``_target_`` node in a config tree, with its dotted path."""
    found = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path, node))
        for key in node:
            found += targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    return found


def test_group_options_are_found():
    options = group_options()
    groups = {g for g, _ in options}
    assert {"data", "features", "model", "split", "evaluation", "registry"} <= groups
    assert ("model", "random_forest") in options


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_group_option_composes_and_its_targets_instantiate(group: str, option: str):
    cfg = load_config(option_overrides(group, option))
    assert cfg.steps is None  # every stage of cfg.pipeline
    # A pipeline's stages name functions to call with data, not objects to build: the
    # declaration is checked by building the pipeline instead.
    load_pipeline(cfg)
    nodes = [(path, node) for path, node in targets(cfg) if not path.startswith("pipeline.")]
    for path, node in nodes:
        assert isinstance(instantiate(node), get_class(node._target_)), path
    if group == "features":
        # Every feature step of a features option is a _target_ node (or deliberately null).
        keys = ("numeric_imputer", "numeric_scaler", "categorical_imputer", "categorical_encoder")
        assert {p for p, _ in nodes} == {
            f"features.{k}" for k in keys if cfg.features[k] is not None
        }
    if group in ("experiment", "search"):  # global packages: no node of their own
        return
    # Every plain value the option file sets is what the composed config holds.
    [path] = [
        c / group / f"{option}.yaml" for c in (CONF_DIR, PACKAGE_CONF) if (c / group).exists()
    ]
    raw = OmegaConf.to_container(OmegaConf.load(path))
    plain = {
        k: v
        for k, v in raw.items()
        if k != "defaults"
        and not isinstance(v, dict | list)
        and not str(v).startswith(("${", "???"))
    }
    composed = OmegaConf.to_container(cfg[group], resolve=True, enum_to_str=True)
    assert {k: composed[k] for k in plain} == plain


@pytest.mark.parametrize("option", [o for g, o in group_options() if g == "search"])
def test_every_search_space_is_an_optuna_sweep_over_its_model(option: str):
    """The search space names keys of the model it selects (a typo would fail every trial)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=[f"search={option}"], return_hydra_config=True
        )
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize"
    assert cfg.model.name == option
    for key in cfg.hydra.sweeper.params:
        group, _, name = key.partition(".")
        assert group == "model", key
        assert name in cfg.model, key


@pytest.mark.parametrize("option", [o for g, o in group_options() if g == "model"])
@pytest.mark.parametrize(
    ("data", "task"), [("breast_cancer", Task.classification), ("diabetes", Task.regression)]
)
def test_every_model_option_builds_an_estimator_for_both_tasks(option: str, data: str, task: Task):
    cfg = load_config([f"model={option}", f"data={data}"])
    estimator = build_estimator(cfg.model, cfg.data.task)
    assert isinstance(estimator, BaseEstimator)
    assert isinstance(estimator, get_class(cfg.model.estimator[task.value]))
    params = estimator.get_params()
    configured = {k: v for k, v in cfg.model.items() if k not in ("name", "estimator")}
    applied = {k: v for k, v in configured.items() if k in params}
    assert applied, f"no configured parameter reached {type(estimator).__name__}"
    assert all(params[k] == v for k, v in applied.items())


def test_model_seed_flows_into_estimator():
    cfg = load_config(["model=random_forest", "seed=7"])
    assert build_estimator(cfg.model, cfg.data.task).random_state == 7
    assert cfg.split.random_state == 7


def test_experiment_preset_overrides_groups():
    cfg = load_config(["experiment=quick_rf"])
    assert cfg.model.name == "random_forest"
    assert cfg.features.name == "trees"
    assert cfg.model.n_estimators == 50


def test_default_config_values():
    cfg = load_config()
    assert cfg.data.name == "breast_cancer"
    assert Task(cfg.data.task) is Task.classification
    assert cfg.registry.model_name == "breast_cancer"
    assert cfg.tracking.experiment_name == "breast_cancer"
    assert cfg.runner.mode == "in_process"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.n_estimatorz=5"], r"model\.n_estimatorz"),
        (["model=random_forest", "model.n_estimatorz=5"], r"model\.n_estimatorz"),
        (["model=nope"], r"model/nope"),
        (["features=nope"], r"features/nope"),
        (["nonsense=1"], r"nonsense"),
        (["data.task=foo"], r"data\.task=foo.*expected one of \[classification, regression\]"),
        (["model.max_iter=abc"], r"model\.max_iter=abc.*could not be converted"),
    ],
)
def test_typos_and_bad_values_raise_config_error_naming_them(overrides: list[str], match: str):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides)


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"(?s)Could not find 'model/nope'.*random_forest"):
        load_config(["model=nope"])


def test_csv_data_without_required_values_names_them_all():
    with pytest.raises(
        ConfigError,
        match=r"missing required config value\(s\): data\.path, data\.target, data\.task",
    ):
        load_config(["data=csv"])


def test_csv_data_without_path_names_path():
    with pytest.raises(ConfigError, match=r"missing required config value\(s\): data\.path$"):
        load_config(["data=csv", "data.target=y", "data.task=regression"])


def test_a_file_given_to_a_bundled_dataset_is_an_error_not_ignored():
    """Without data=csv, data.path would be ignored and the bundled default trained on."""
    with pytest.raises(
        ConfigError,
        match=r"^data\.path=seattle\.csv is set, but data=breast_cancer is a dataset bundled with "
        r"scikit-learn and reads no file: add data=csv to read seattle\.csv$",
    ):
        load_config(["data.path=seattle.csv", "data.target=weather"])


def test_csv_data_is_named_after_its_file(tmp_path: Path):
    cfg = load_config(
        [
            "data=csv",
            f"data.path={tmp_path / 'customers.csv'}",
            "data.target=y",
            "data.task=regression",
        ]
    )
    assert cfg.data.name == "customers"
    assert cfg.registry.model_name == "customers"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["runner.mode=cluster"], r"runner\.mode='cluster'"),
        (["data.source=ftp"], r"data\.source='ftp'"),
        (["data.loader=null"], r"data\.loader is required when data\.source=sklearn"),
        (["promotion.metric=rmse"], r"promotion\.metric='rmse' is not a classification metric"),
        (["data=diabetes", "promotion.metric=roc_auc"], r"'roc_auc' is not a regression metric"),
        # Checked before a run starts, not in register after training.
        (["promotion.confidence=1.5"], r"promotion\.confidence must be between 0 and 1"),
        (["promotion.resamples=3"], r"promotion\.resamples must be at least 10, got 3"),
        (["split.test_size=1.5"], r"split\.test_size=1\.5 must be between 0 and 1"),
        (["split.test_size=0"], r"split\.test_size=0\.0 must be between 0 and 1"),
        # A role that is not one: before a run (and --dry-run), not when validate reads the data.
        (["+data.columns.year.role=date"], r"data\.columns\.year\.role: 'date' is not a role"),
        (["+data.columns.year=date"], r"data\.columns\.year\.role: 'date' is not a role"),
    ],
)
def test_values_types_cannot_check_raise_config_error(overrides: list[str], match: str):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides)


def test_threshold_on_unknown_metric_is_rejected():
    with pytest.raises(ConfigError, match=r"evaluation\.thresholds\.nope: unknown metric"):
        load_config(["+evaluation.thresholds.nope.min=1.0"])


def test_thresholds_can_be_added_from_the_command_line():
    cfg = load_config(["+evaluation.thresholds.accuracy.min=0.9"])
    assert cfg.evaluation.thresholds.accuracy.min == 0.9
    assert cfg.evaluation.thresholds.roc_auc.min == 0.75


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("+evaluation.thresholds.accuracy.mni=0.9", r"thresholds\.accuracy must be a mapping"),
        (
            "evaluation.thresholds.roc_auc.min=abc",
            r"thresholds\.roc_auc\.min='abc' is not a number",
        ),
    ],
)
def test_malformed_thresholds_are_rejected(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config([override])


def test_existing_threshold_bounds_can_be_overridden():
    cfg = load_config(["evaluation.thresholds.roc_auc.max=0.99", "evaluation=default"])
    assert cfg.evaluation.thresholds.roc_auc.min == 0.75
    assert cfg.evaluation.thresholds.roc_auc.max == 0.99
    assert load_config(["evaluation=none"]).evaluation.thresholds == {}


def test_model_without_estimator_for_the_task_is_rejected():
    cfg = load_config(["data=diabetes"])
    with open_dict(cfg):
        del cfg.model.estimator["regression"]
    with pytest.raises(ConfigError, match=r"no estimator for task 'regression'"):
        check_config(cfg)


def test_build_estimator_rejects_a_class_that_cannot_be_imported():
    cfg = load_config(["model.estimator.classification=sklearn.nothing.Here"])
    with pytest.raises(ConfigError, match=r"cannot import sklearn\.nothing\.Here"):
        build_estimator(cfg.model, cfg.data.task)


def test_build_estimator_passes_only_accepted_keys():
    cfg = load_config(["model=logistic_regression", "model.C=0.5", "model.alpha=3.0"])
    classifier = build_estimator(cfg.model, Task.classification)
    regressor = build_estimator(cfg.model, Task.regression)
    assert classifier.C == 0.5
    assert regressor.alpha == 3.0
    assert "C" not in regressor.get_params()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ([], ("roc_auc", True)),
        (["data=diabetes"], ("rmse", False)),
        (["promotion.metric=log_loss"], ("log_loss", False)),
        (["data=diabetes", "promotion.metric=r2"], ("r2", True)),
    ],
)
def test_promotion_metric(overrides: list[str], expected: tuple[str, bool]):
    assert promotion_metric(load_config(overrides)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("''", []),
        (
            "model=random_forest  model.n_estimators=50",
            ["model=random_forest", "model.n_estimators=50"],
        ),
        ("+data.read_options.sep=';' seed=1", ["+data.read_options.sep=';'", "seed=1"]),
        ("data.path='/my data/x.csv'", ["data.path='/my data/x.csv'"]),
        ('data.path="/a b"', ['data.path="/a b"']),
    ],
)
def test_split_overrides_keeps_the_quotes_hydra_needs(text: str, expected: list[str]):
    assert split_overrides(text) == expected


def test_split_overrides_rejects_an_unclosed_quote():
    with pytest.raises(ConfigError, match=r"hydra_options: unclosed ' in"):
        split_overrides("data.path='/x")


def test_quoted_paths_compose_back_to_the_same_value():
    path = "/tmp/a,b/c (1)'s [x].csv"
    overrides = [
        "data=csv",
        f"data.path={hydra_quote(path)}",
        "data.target=y",
        "data.task=regression",
    ]
    assert load_config(split_overrides(" ".join(overrides))).data.path == path


def test_flatten_and_resolved_yaml():
    cfg = load_config(["seed=3"])
    flat = flatten(cfg)
    assert flat["model.random_state"] == "3"
    assert flat["data.task"] == "classification"
    assert flat["evaluation.thresholds.roc_auc.min"] == "0.75"
    text = resolved_yaml(cfg)
    assert "${" not in text
    assert OmegaConf.create(text).model.random_state == 3


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("customers.csv", "customers"),
        ("data/daily/2026-12-01.csv", "daily"),
        ("sales_2026-12-01.csv", "sales"),
        ("exports/20261201.csv", "exports"),
        ("prices-2026_12_01T06-30.csv", "prices"),
    ],
)
def test_a_dataset_is_not_named_after_the_date_in_its_file_name(path: str, name: str):
    assert dataset_name(path) == name
    cfg = load_config(["data=csv", f"data.path={path}", "data.target=y", "data.task=regression"])
    assert cfg.data.name == cfg.registry.model_name == name


def test_a_settings_value_is_typed_as_hydra_types_it_whatever_its_key():
    assert setting_value("data.read_options.skiprows=2") == 2
    assert setting_value("+data.read_options.sep=';'") == ";"
    assert setting_value("data.read_options.na_values=[NA,-]") == ["NA", "-"]
    assert setting_value("data.columns.Numéro.role=id") == "id"  # a key Hydra cannot lex
    with pytest.raises(ConfigError, match=r"Hydra cannot read the value ';'.* quote the whole"):
        setting_value("+data.read_options.sep=;")  # the shell took the quotes


def test_a_column_the_command_line_cannot_name_is_given_its_role_in_the_data_config():
    assert column_setting("listing_id", "text") == "+data.columns.listing_id.role=text"
    said = column_setting("od280/od315", "categorical")
    assert said == (
        "data.columns: {'od280/od315': {role: categorical}} in the data config (the command "
        "line cannot name column 'od280/od315')"
    )
    # What it says to write is YAML for that column's role.
    written = yaml.safe_load(said.split(" in the data config")[0].removeprefix("data.columns: "))
    assert written == {"od280/od315": {"role": "categorical"}}
