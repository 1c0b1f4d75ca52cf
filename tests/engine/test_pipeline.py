"""Which pipeline a config runs: ``pipeline: package.module:NAME``, checked with its steps."""

from __future__ import annotations

import pytest
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline.config import load_config
from mlflow_pipeline.engine.pipeline import (
    build_pipeline,
    import_pipeline,
    load_pipeline,
    selected_stages,
)
from mlflow_pipeline.errors import ConfigError
from tests.helpers import REFERENCE as PIPELINE


def test_the_default_config_runs_the_reference_pipeline_whole():
    cfg = load_config()
    assert cfg.pipeline.name == "reference"
    pipeline = load_pipeline(cfg)
    assert [s.name for s in selected_stages(pipeline, cfg)] == list(PIPELINE.stage_names)


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
        ("mlflow_pipeline.reference:champion_profile", r"is not a Pipeline declaration"),
        ("mlflow_pipeline.config:load_config", r"is not a Pipeline declaration"),
    ],
)
def test_a_bad_pipeline_path_is_a_config_error(path, message):
    with pytest.raises(ConfigError, match=message):
        import_pipeline(path)


# ---- a declaration is checked as it is built -------------------------------------------------

GOOD = {
    "name": "toy",
    "datasets": {
        "raw": {"kind": "frame", "schema": "mlflow_pipeline.reference.raw_schema"},
        "note": {"kind": "text", "filename": "note.txt"},
    },
    "stages": {
        "ingest": {"_target_": "mlflow_pipeline.stages.ingest.ingest", "outputs": ["raw"]},
        "describe": {
            "_target_": "tests.engine.test_pipeline.describe",
            "inputs": {"frame": "raw"},
            "outputs": ["note"],
        },
    },
}


def describe(cfg, frame):
    return {"note": f"{len(frame)} rows"}


def declared(**changes) -> DictConfig:
    node = OmegaConf.create(GOOD)
    for dotted, value in changes.items():
        OmegaConf.update(node, dotted.replace("__", "."), value, force_add=True)
    return node


def test_a_declaration_builds_a_pipeline_with_renamed_arguments():
    pipeline = build_pipeline(declared())
    assert [s.name for s in pipeline.order()] == ["ingest", "describe"]
    stage = pipeline.stage_named("describe")
    assert stage.argument("raw") == "frame"
    assert stage.func is describe


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"stages__describe__inputs": {"frame": "nope"}},
            r"pipeline.stages.describe.inputs: unknown dataset\(s\) \['nope'\]",
        ),
        (
            {"stages__describe___target_": "tests.nowhere.describe"},
            r"pipeline.stages.describe._target_: cannot import 'tests.nowhere.describe'",
        ),
        (
            {"stages__describe__inputs": {"table": "raw"}},
            r"pipeline.stages.describe._target_: .*describe cannot take the stage's inputs",
        ),
        (
            {"stages__describe__outputs": ["raw"]},
            r"pipeline.stages.describe.outputs: 'raw' is already an output of stage 'ingest'",
        ),
        (
            {"stages__ingest__inputs": {"cfg_note": "note"}},
            r"pipeline.stages.ingest._target_: .*cannot take",
        ),
        ({"datasets__raw__schema": None}, r"pipeline.datasets.raw.schema: a frame needs a schema"),
        (
            {"datasets__raw__kind": "table"},
            r"pipeline.datasets.raw.kind: 'table' is not one of frame, text, model",
        ),
        (
            {"stages__describe__input": ["raw"]},
            r"pipeline.stages.describe: unknown field\(s\) \['input'\]",
        ),
        ({"metrics_stage": "evaluate"}, r"pipeline.metrics_stage: no stage 'evaluate'"),
        (
            {"stages__describe__gate": "tests.engine.test_pipeline.GOOD"},
            r"pipeline.stages.describe.gate: .* is not a function",
        ),
        (
            {"stages__describe__work": "tests.nowhere.work"},
            r"pipeline.stages.describe.work: cannot import 'tests.nowhere.work'",
        ),
        (  # a typo would leave the key in the stage's cache key without a word
            {"stages__describe__config_keys": ["data"], "stages__describe__ignore_keys": ["date"]},
            r"pipeline.stages.describe.ignore_keys: 'date' is not under the stage's config_keys "
            r"\(data\)",
        ),
    ],
)
def test_a_bad_declaration_names_the_stage_and_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        build_pipeline(declared(**changes))


def test_a_cycle_is_named():
    node = declared(
        stages__ingest__inputs={"cfg_x": "note"},
        stages__ingest___target_="tests.engine.test_pipeline.anything",
    )
    with pytest.raises(ConfigError, match=r"stage dependencies form a cycle"):
        build_pipeline(node)


def test_a_read_nobody_writes_is_named():
    node = declared(datasets__extra={"kind": "text"}, stages__describe__schema_inputs=["extra"])
    with pytest.raises(ConfigError, match=r"pipeline.stages.describe: no stage outputs 'extra'"):
        build_pipeline(node)


def anything(cfg, **kwargs):
    return {}


def test_the_reference_evaluate_counts_its_importance_work():
    import numpy as np
    import pandas as pd

    from mlflow_pipeline.engine import threads
    from mlflow_pipeline.stages.evaluate import native_work

    stages = {s.name: s for s in load_pipeline(load_config()).stages}
    assert stages["evaluate"].work is native_work
    assert all(s.work is None for name, s in stages.items() if name != "evaluate")
    # 100k rows' test set (20k x 33 values) is small as an input, not as evaluate's work.
    test = pd.DataFrame(np.zeros((20_000, 33)))
    assert test.size < threads.SMALL_CELLS < native_work(None, test)
    # 1,461 rows' test set (292 x 6): small either way.
    assert native_work(None, pd.DataFrame(np.zeros((292, 6)))) < threads.SMALL_CELLS
