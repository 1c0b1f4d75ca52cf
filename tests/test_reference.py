"""The reference pipeline's declaration: complete, consistent with the config and MLproject."""

from __future__ import annotations

import yaml

from mlflow_pipeline.config import PROJECT_ROOT, load_config
from tests.helpers import REFERENCE as PIPELINE

STAGE_NAMES = ["ingest", "profile", "validate", "split", "train", "evaluate", "register"]


def test_full_pipeline_order():
    assert [s.name for s in PIPELINE.order()] == STAGE_NAMES


def test_slices_keep_dependency_order_whatever_the_order_asked():
    names = [s.name for s in PIPELINE.order(["evaluate", "train", "split"])]
    assert names == ["split", "train", "evaluate"]


def test_every_input_has_an_earlier_producer():
    made_by = PIPELINE.producers()
    position = {s.name: i for i, s in enumerate(PIPELINE.order())}
    for stage in PIPELINE.stages:
        for dataset in stage.reads:
            assert position[made_by[dataset.name].name] < position[stage.name], dataset.name


def test_each_dataset_has_one_producer():
    outputs = [d.name for s in PIPELINE.stages for d in s.outputs]
    assert len(outputs) == len(set(outputs))
    assert PIPELINE.producers()["model"].name == "train"


def test_the_named_stages_and_outputs_exist():
    producers = PIPELINE.producers()
    assert PIPELINE.metrics_stage in PIPELINE.stage_names
    assert PIPELINE.register_stage in PIPELINE.stage_names
    assert PIPELINE.promotion_output in producers
    assert PIPELINE.drift_output in producers
    assert [d.name for s in PIPELINE.stages for d in s.outputs if d.contract] == ["contract"]


def test_config_keys_exist_in_the_config():
    cfg = load_config()
    for stage in PIPELINE.stages:
        assert stage.config_keys, stage.name
        for key in stage.config_keys:
            assert key in cfg, f"{stage.name}: {key}"


def test_mlproject_has_one_entry_point_per_stage():
    project = yaml.safe_load((PROJECT_ROOT / "MLproject").read_text())
    stages = {name: ep for name, ep in project["entry_points"].items() if name in STAGE_NAMES}
    assert sorted(stages) == sorted(STAGE_NAMES)
    assert set(project["entry_points"]) - set(STAGE_NAMES) == {"main", "score"}
    for name, entry_point in stages.items():
        assert entry_point["command"].startswith(f"python -m mlflow_pipeline.cli {name} ")
