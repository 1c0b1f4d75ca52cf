"""Which pipeline a config runs, built from its declaration (``cfg.pipeline``: the config group
``conf/pipeline/<name>.yaml``, or a ``package.module:NAME`` of a ``Pipeline`` object) and
checked as it is built: a bad declaration is a ConfigError naming the stage and the field."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandera.pandas as pa
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from mlflow_pipeline.config import PROJECT_ROOT, use_project_code
from mlflow_pipeline.engine.spec import DATASET_KINDS, Dataset, Pipeline, Stage
from mlflow_pipeline.errors import ConfigError

PIPELINE_FIELDS = {
    "name",
    "datasets",
    "stages",
    "metrics_stage",
    "register_stage",
    "promotion_output",
    "drift_output",
}
DATASET_FIELDS = {"kind", "schema", "filename", "log_as_metrics", "optional", "contract"}
STAGE_FIELDS = {
    "_target_",
    "inputs",
    "outputs",
    "schema_inputs",
    "config_keys",
    "gate",
    "services",
    "file_keys",
    "ignore_keys",
    "seed_keys",
    "packages",
    "context",
    "work",
}


def load_pipeline(cfg: DictConfig) -> Pipeline:
    """The pipeline ``cfg.pipeline`` declares, with ``cfg.steps`` and ``cfg.cache.stages``
    checked against it. The project's ``src/`` is importable first. Raises ConfigError."""
    use_project_code()
    declared = cfg.pipeline
    if isinstance(declared, str):
        pipeline = import_pipeline(declared)
    else:
        pipeline = build_pipeline(declared)
    names = pipeline.stage_names
    unknown = [s for s in (cfg.get("steps") or []) if s not in names]
    if unknown:
        raise ConfigError(f"unknown step(s) {unknown} in 'steps'; choose from {', '.join(names)}")
    stages = (cfg.get("cache") or {}).get("stages") or {}
    unknown = [name for name in stages if name not in names]
    if unknown:
        raise ConfigError(
            f"cache.stages: unknown stage(s) {unknown}; choose from {', '.join(names)}"
        )
    return pipeline


def import_pipeline(path: str) -> Pipeline:
    """The ``Pipeline`` object at ``package.module:NAME``. Raises ConfigError."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"pipeline: {path!r} is not of the form package.module:NAME")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"pipeline: cannot import module '{module_name}': {exc}") from exc
    pipeline = getattr(module, attribute, None)
    if not isinstance(pipeline, Pipeline):
        raise ConfigError(f"pipeline: '{path}' is not a Pipeline declaration")
    return pipeline


def selected_stages(pipeline: Pipeline, cfg: DictConfig) -> list[Stage]:
    """The stages ``cfg.steps`` selects (all when null), in dependency order."""
    steps = cfg.get("steps")
    return pipeline.order(list(steps) if steps else None)


# ------------------------------------------------------------------------- the declaration
def build_pipeline(node: DictConfig) -> Pipeline:
    """A ``Pipeline`` from its declaration (see ``conf/pipeline/reference.yaml``)."""
    spec = _plain(node, "pipeline")
    _no_unknown_fields(spec, PIPELINE_FIELDS, "pipeline")
    datasets = {
        name: _dataset(name, _plain(fields, f"pipeline.datasets.{name}"))
        for name, fields in (spec.get("datasets") or {}).items()
    }
    stages = tuple(
        _stage(name, _plain(fields, f"pipeline.stages.{name}"), datasets)
        for name, fields in (spec.get("stages") or {}).items()
    )
    if not stages:
        raise ConfigError("pipeline.stages: the pipeline declares no stage")
    pipeline = Pipeline(
        name=str(spec.get("name") or "pipeline"),
        stages=stages,
        metrics_stage=spec.get("metrics_stage"),
        register_stage=spec.get("register_stage"),
        promotion_output=spec.get("promotion_output"),
        drift_output=spec.get("drift_output"),
    )
    _check_wiring(pipeline)
    return pipeline


@dataclass(frozen=True)
class SchemaSource:
    """A frame schema declared by name: a pandera DataFrameModel or DataFrameSchema, a function
    (cfg, contract) -> schema, or a pandera YAML file. ``source`` is what the cache key hashes
    (the model's or function's code, or the file's content)."""

    source: Any

    def __call__(self, cfg: DictConfig, contract: pa.DataFrameSchema | None) -> Any:
        source = self.source
        if isinstance(source, Path):
            return pa.DataFrameSchema.from_yaml(source)
        if isinstance(source, type) and issubclass(source, pa.DataFrameModel):
            return source.to_schema()
        if isinstance(source, pa.DataFrameSchema):
            return source
        return source(cfg, contract)


def _dataset(name: str, fields: dict[str, Any]) -> Dataset:
    where = f"pipeline.datasets.{name}"
    _no_unknown_fields(fields, DATASET_FIELDS, where)
    kind = fields.get("kind", "frame")
    if kind not in DATASET_KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {', '.join(DATASET_KINDS)}")
    schema = fields.get("schema")
    if kind == "frame" and not schema:
        raise ConfigError(
            f"{where}.schema: a frame needs a schema (a pandera DataFrameModel or "
            "DataFrameSchema, a function (cfg, contract) -> schema, or a pandera YAML file)"
        )
    return Dataset(
        name,
        kind=kind,
        schema=_schema(str(schema), f"{where}.schema") if schema else None,
        filename=fields.get("filename") or (name if kind == "text" else None),
        log_as_metrics=bool(fields.get("log_as_metrics", False)),
        optional=bool(fields.get("optional", False)),
        contract=bool(fields.get("contract", False)),
    )


def _schema(spec: str, where: str) -> SchemaSource:
    if spec.endswith((".yaml", ".yml")):
        path = Path(spec) if Path(spec).is_absolute() else PROJECT_ROOT / spec
        if not path.is_file():
            raise ConfigError(f"{where}: no pandera schema file {path}")
        return SchemaSource(path)
    found = _import(spec, where)
    usable = (
        (isinstance(found, type) and issubclass(found, pa.DataFrameModel))
        or isinstance(found, pa.DataFrameSchema)
        or callable(found)
    )
    if not usable:
        raise ConfigError(f"{where}: '{spec}' is not a pandera schema or a schema function")
    return SchemaSource(found)


def _stage(name: str, fields: dict[str, Any], datasets: dict[str, Dataset]) -> Stage:
    where = f"pipeline.stages.{name}"
    _no_unknown_fields(fields, STAGE_FIELDS, where)
    if not fields.get("_target_"):
        raise ConfigError(f"{where}._target_: the stage names no function")
    func = _import(str(fields["_target_"]), f"{where}._target_")
    if not callable(func):
        raise ConfigError(f"{where}._target_: '{fields['_target_']}' is not a function")
    inputs = fields.get("inputs") or {}
    if isinstance(inputs, list):
        inputs = {dataset: dataset for dataset in inputs}

    def named(names: list[str], field: str) -> tuple[Dataset, ...]:
        unknown = [n for n in names if n not in datasets]
        if unknown:
            raise ConfigError(
                f"{where}.{field}: unknown dataset(s) {unknown}; declare them under "
                "pipeline.datasets"
            )
        return tuple(datasets[n] for n in names)

    stage = Stage(
        name,
        func,
        inputs=named(list(inputs.values()), "inputs"),
        outputs=named(list(fields.get("outputs") or []), "outputs"),
        schema_inputs=named(list(fields.get("schema_inputs") or []), "schema_inputs"),
        arguments=tuple((dataset, argument) for argument, dataset in inputs.items()),
        config_keys=tuple(fields.get("config_keys") or ()),
        gate=_optional_callable(fields.get("gate"), f"{where}.gate"),
        services=tuple(fields.get("services") or ()),
        file_keys=tuple(fields.get("file_keys") or ()),
        ignore_keys=tuple(fields.get("ignore_keys") or ()),
        seed_keys=tuple(fields.get("seed_keys") or ()),
        packages=tuple(fields.get("packages") or ()),
        context=_optional_callable(fields.get("context"), f"{where}.context"),
        work=_optional_callable(fields.get("work"), f"{where}.work"),
    )
    _check_signature(stage, where)
    for key in stage.ignore_keys:  # a typo would silently leave the key in
        if not any(key == k or key.startswith(k + ".") for k in stage.config_keys):
            raise ConfigError(
                f"{where}.ignore_keys: '{key}' is not under the stage's config_keys "
                f"({', '.join(stage.config_keys) or 'none'})"
            )
    return stage


def _check_signature(stage: Stage, where: str) -> None:
    """The function must accept the config and every keyword argument the engine passes."""
    try:
        signature = inspect.signature(stage.func)
    except (TypeError, ValueError):
        return
    arguments = [stage.argument(d.name) for d in stage.inputs] + list(stage.services)
    try:
        signature.bind_partial(None, **dict.fromkeys(arguments))
    except TypeError as exc:
        raise ConfigError(
            f"{where}._target_: {stage.func.__module__}.{stage.func.__qualname__} cannot take "
            f"the stage's inputs and services {arguments}: {exc}"
        ) from exc


def _check_wiring(pipeline: Pipeline) -> None:
    """Every dataset has one producer, every read has a producer, the graph has no cycle and
    the named stages and outputs exist."""
    producers: dict[str, str] = {}
    for stage in pipeline.stages:
        for dataset in stage.outputs:
            if dataset.name in producers:
                raise ConfigError(
                    f"pipeline.stages.{stage.name}.outputs: '{dataset.name}' is already an "
                    f"output of stage '{producers[dataset.name]}'"
                )
            producers[dataset.name] = stage.name
    for stage in pipeline.stages:
        for dataset in stage.reads:
            if dataset.name not in producers:
                raise ConfigError(
                    f"pipeline.stages.{stage.name}: no stage outputs '{dataset.name}', which it "
                    "reads"
                )
    pipeline.order()  # raises ConfigError on a cycle
    for field in ("metrics_stage", "register_stage"):
        value = getattr(pipeline, field)
        if value is not None and value not in pipeline.stage_names:
            raise ConfigError(f"pipeline.{field}: no stage '{value}'")
    for field in ("promotion_output", "drift_output"):
        value = getattr(pipeline, field)
        if value is not None and value not in producers:
            raise ConfigError(f"pipeline.{field}: no stage outputs '{value}'")


def _import(path: str, where: str) -> Any:
    try:
        return get_object(path)
    except Exception as exc:  # hydra wraps import failures in several types
        cause = exc.__cause__ or exc
        raise ConfigError(f"{where}: cannot import '{path}': {cause}") from exc


def _optional_callable(path: Any, where: str) -> Callable[..., Any] | None:
    if not path:
        return None
    found = _import(str(path), where)
    if not callable(found):
        raise ConfigError(f"{where}: '{path}' is not a function")
    return found


def _plain(node: Any, where: str) -> dict[str, Any]:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return node
    kind = "a list" if isinstance(node, ListConfig | list) else type(node).__name__
    raise ConfigError(f"{where}: expected a mapping of fields, got {kind}")


def _no_unknown_fields(fields: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {', '.join(sorted(known))}")
