"""Stage order comes from declared inputs and outputs; slicing keeps that order."""

from __future__ import annotations

import pytest

from mlflow_pipeline.config import STAGE_NAMES, load_config
from mlflow_pipeline.engine.pipeline import STAGES, order, producers, stage_named
from mlflow_pipeline.engine.stage import Dataset, Stage
from mlflow_pipeline.errors import ConfigError

A, B = Dataset("a"), Dataset("b")


def names(stages: list[Stage]) -> list[str]:
    return [s.name for s in stages]


def test_full_pipeline_order():
    assert names(order(list(STAGE_NAMES))) == list(STAGE_NAMES)


def test_slices_keep_dependency_order_whatever_the_order_asked():
    assert names(order(["evaluate", "train", "split"])) == ["split", "train", "evaluate"]
    assert names(order(["register"])) == ["register"]


def test_unknown_step():
    with pytest.raises(ConfigError, match=r"unknown step\(s\) \['deploy'\]; choose from ingest"):
        order(["train", "deploy"])


def test_cycle_is_a_config_error():
    stages = (
        Stage("x", lambda cfg, b: {}, inputs=(B,), outputs=(A,)),
        Stage("y", lambda cfg, a: {}, inputs=(A,), outputs=(B,)),
    )
    with pytest.raises(ConfigError, match=r"stage dependencies form a cycle"):
        order(["x", "y"], stages)


def test_every_input_has_an_earlier_producer():
    made_by = producers()
    position = {s.name: i for i, s in enumerate(order(list(STAGE_NAMES)))}
    for stage in STAGES:
        for dataset in (*stage.inputs, *stage.schema_inputs):
            assert position[made_by[dataset.name].name] < position[stage.name], dataset.name


def test_each_dataset_has_one_producer():
    outputs = [d.name for s in STAGES for d in s.outputs]
    assert len(outputs) == len(set(outputs))
    assert producers()["model"].name == "train"


def test_config_keys_exist_in_the_config():
    cfg = load_config()
    for stage in STAGES:
        assert stage.config_keys, stage.name
        for key in stage.config_keys:
            assert key in cfg, f"{stage.name}: {key}"


def test_stage_named():
    assert stage_named("split").name == "split"
    with pytest.raises(ConfigError, match=r"unknown stage 'deploy'"):
        stage_named("deploy")
