"""How a pipeline is declared: its stages, their typed inputs and outputs, what each reads from
outside the pipeline, and the order they run in (derived from inputs and outputs).

A declaration is data: the engine runs any ``Pipeline`` the same way (cache, lineage, gates,
runners, sweeps) and knows none of its stage or dataset names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any

import pandera.pandas as pa
from omegaconf import DictConfig

from mlflow_pipeline.errors import ConfigError

# A frame's schema, from the config and the data contract (None when the stage has none).
SchemaFn = Callable[[DictConfig, "pa.DataFrameSchema | None"], pa.DataFrameSchema]
DATASET_KINDS = ("frame", "text", "model")


@dataclass(frozen=True)
class Dataset:
    """A named thing that crosses a stage boundary.

    kind: "frame" (parquet, validated by ``schema``), "text" (a file called ``filename``) or
    "model" (an MLflow sklearn model). ``contract``: this text dataset is the data contract
    (pandera YAML) that the frame schemas of the stages reading or writing it are built from.
    """

    name: str
    kind: str = "frame"
    schema: SchemaFn | None = None
    filename: str | None = None
    # Also log each (metric, value) row as an MLflow metric of the stage run.
    log_as_metrics: bool = False
    # The stage may return None for it (nothing is logged then).
    optional: bool = False
    contract: bool = False


@dataclass(frozen=True)
class Context:
    """Something a stage reads from outside the pipeline (the champion's training profile, the
    aliases as they are now), resolved once per stage by the engine.

    ``key`` goes into the stage's cache key (a change reruns the stage); when ``argument`` is
    set, ``load()`` is called only when the stage really runs, and its value is passed to the
    stage function as that keyword argument.
    """

    key: str
    argument: str | None = None
    load: Callable[[], Any] | None = None

    def value(self) -> Any:
        return self.load() if self.load is not None else None


# name (as the cache reason says it) -> Context, given the config and the run's services.
ContextFn = Callable[[DictConfig, dict[str, Any]], dict[str, Context]]


@dataclass(frozen=True)
class Stage:
    name: str
    func: Callable[..., dict[str, Any]]
    inputs: tuple[Dataset, ...] = ()
    outputs: tuple[Dataset, ...] = ()
    # Read only to build the schemas of frame inputs (the data contract); not passed on.
    schema_inputs: tuple[Dataset, ...] = ()
    # The config groups the stage reads; logged as its params and config.yaml.
    config_keys: tuple[str, ...] = ()
    # Runs after the outputs are logged; raising stops the pipeline (e.g. thresholds).
    gate: Callable[[DictConfig, dict[str, Any]], None] | None = None
    # Keyword arguments the function takes from the run's services ("registry", "lineage",
    # "stage_run_id", "pipeline_run_id"; see engine.services).
    services: tuple[str, ...] = ()
    # Config keys naming files the stage reads: their content is part of the cache key.
    file_keys: tuple[str, ...] = ()
    # Keys under config_keys left out of the cache key (still logged as params): what reaches
    # the stage through its inputs, such as data.path after ingest (the file's content is in
    # ingest's key, and an identical `raw` makes the later stages hits).
    ignore_keys: tuple[str, ...] = ()
    # Config keys that seed randomness: when one is present and null, the stage is not cacheable.
    seed_keys: tuple[str, ...] = ()
    # Packages (besides cache.BASE_PACKAGES) whose version is part of the cache key.
    packages: tuple[str, ...] = ()
    # What the stage reads from outside the pipeline: part of its cache key, and passed in.
    context: ContextFn | None = None
    # (dataset, argument) pairs: the function takes that input under another name (a project
    # that inserts a stage rewires its neighbour: train's `train` argument <- clean_train).
    arguments: tuple[tuple[str, str], ...] | dict[str, str] = ()
    # How many values the stage's native code works through, from (cfg, **inputs), for
    # runner.threads=auto (engine/threads.py); default: its frame inputs' rows x columns.
    work: Callable[..., int] | None = None

    def argument(self, dataset: str) -> str:
        """The keyword argument that passes input ``dataset`` to the function."""
        return dict(self.arguments).get(dataset, dataset)

    @property
    def reads(self) -> tuple[Dataset, ...]:
        """Every dataset the stage reads: its inputs and its schema inputs."""
        return (*self.inputs, *self.schema_inputs)


@dataclass(frozen=True)
class Pipeline:
    """A named, ordered set of stages. Stage order follows from who produces what."""

    name: str
    stages: tuple[Stage, ...]
    # The stage whose metrics score a run: the sweep's summary and objective, its best job.
    metrics_stage: str | None = None
    # The stage that writes to the model registry: a sweep job leaves it to the sweep, which
    # runs it once, for the best job.
    register_stage: str | None = None
    # Text datasets (JSON) the runner reads back for the run's summary and alerts: the
    # promotion decision, and the drift result (which also tags the pipeline run).
    promotion_output: str | None = None
    drift_output: str | None = None

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stages)

    def producers(self) -> dict[str, Stage]:
        """Dataset name -> the stage that outputs it."""
        return {d.name: s for s in self.stages for d in s.outputs}

    def stage_named(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"unknown stage '{name}'; choose from {', '.join(self.stage_names)}")

    def order(self, steps: list[str] | tuple[str, ...] | None = None) -> list[Stage]:
        """The selected stages (all when ``steps`` is None) in dependency order. Raises
        ConfigError for unknown names and for a cycle."""
        by_name = {s.name: s for s in self.stages}
        steps = list(by_name) if steps is None else list(steps)
        unknown = [s for s in steps if s not in by_name]
        if unknown:
            raise ConfigError(f"unknown step(s) {unknown}; choose from {', '.join(by_name)}")
        made_by = self.producers()
        graph = {
            s.name: {made_by[d.name].name for d in s.reads if d.name in made_by}
            for s in self.stages
        }
        try:
            ordered = list(TopologicalSorter(graph).static_order())
        except CycleError as exc:
            raise ConfigError(f"stage dependencies form a cycle: {exc.args[1]}") from exc
        return [by_name[name] for name in ordered if name in steps]
