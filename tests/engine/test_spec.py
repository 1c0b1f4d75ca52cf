"""A pipeline declaration: stage order comes from declared inputs and outputs; slicing keeps
that order; a cycle or an unknown name is a config error."""

from __future__ import annotations

import pytest

from mlflow_pipeline.engine.spec import Dataset, Pipeline, Stage
from mlflow_pipeline.errors import ConfigError

A, B, C = Dataset("a"), Dataset("b"), Dataset("c", kind="text", contract=True)


def _stage(name: str, inputs=(), outputs=(), schema_inputs=()) -> Stage:
    return Stage(
        name, lambda cfg, **_: {}, inputs=inputs, outputs=outputs, schema_inputs=schema_inputs
    )


# Declared out of order on purpose: the order follows from who reads what.
TOY = Pipeline(
    "toy",
    (
        _stage("third", inputs=(B,), schema_inputs=(C,)),
        _stage("first", outputs=(A, C)),
        _stage("second", inputs=(A,), outputs=(B,)),
    ),
)


def names(stages: list[Stage]) -> list[str]:
    return [s.name for s in stages]


def test_full_order_follows_inputs_and_outputs():
    assert names(TOY.order()) == ["first", "second", "third"]


def test_slices_keep_dependency_order_whatever_the_order_asked():
    assert names(TOY.order(["third", "first"])) == ["first", "third"]
    assert names(TOY.order(["second"])) == ["second"]


def test_unknown_step():
    with pytest.raises(ConfigError, match=r"unknown step\(s\) \['deploy'\]; choose from third"):
        TOY.order(["first", "deploy"])


def test_cycle_is_a_config_error():
    cyclic = Pipeline(
        "cyclic", (_stage("x", inputs=(B,), outputs=(A,)), _stage("y", inputs=(A,), outputs=(B,)))
    )
    with pytest.raises(ConfigError, match=r"stage dependencies form a cycle"):
        cyclic.order(["x", "y"])


def test_producers_and_reads():
    assert {name: s.name for name, s in TOY.producers().items()} == {
        "a": "first",
        "c": "first",
        "b": "second",
    }
    assert [d.name for d in TOY.stage_named("third").reads] == ["b", "c"]


def test_stage_named():
    assert TOY.stage_named("second").name == "second"
    with pytest.raises(ConfigError, match=r"unknown stage 'deploy'"):
        TOY.stage_named("deploy")
