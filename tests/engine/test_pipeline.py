"""Which pipeline a config runs: ``pipeline: package.module:NAME``, checked with its steps."""

from __future__ import annotations

import pytest

from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine.pipeline import import_pipeline, load_pipeline, selected_stages
from mlflow_pipeline.errors import ConfigError
from mlflow_pipeline.reference import PIPELINE


def test_the_default_config_runs_the_reference_pipeline_whole():
    cfg = load_config()
    assert cfg.pipeline == "mlflow_pipeline.reference:PIPELINE"
    assert load_pipeline(cfg) is PIPELINE
    assert [s.name for s in selected_stages(PIPELINE, cfg)] == list(PIPELINE.stage_names)


def test_steps_select_stages_in_pipeline_order():
    cfg = load_config(["steps=[evaluate,train]"])
    assert [s.name for s in selected_stages(load_pipeline(cfg), cfg)] == ["train", "evaluate"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["steps=[ingest,bogus]"], r"unknown step\(s\) \['bogus'\] in 'steps'; choose from ingest"),
        (["+cache.stages.deploy=off"], r"cache.stages: unknown stage\(s\) \['deploy'\]"),
    ],
)
def test_unknown_stage_names_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline(load_config(overrides))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("mlflow_pipeline.reference", r"not of the form package.module:NAME"),
        ("no_such_module:PIPELINE", r"cannot import module 'no_such_module'"),
        ("mlflow_pipeline.reference:NOPE", r"'mlflow_pipeline.reference:NOPE' is not a Pipeline"),
        ("mlflow_pipeline.config:load_config", r"is not a Pipeline declaration"),
    ],
)
def test_a_bad_pipeline_path_is_a_config_error(path, message):
    with pytest.raises(ConfigError, match=message):
        import_pipeline(path)
