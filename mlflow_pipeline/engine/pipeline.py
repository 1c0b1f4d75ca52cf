"""Which pipeline a config runs: ``cfg.pipeline`` names a ``Pipeline`` declaration
(``package.module:NAME``), imported here; ``cfg.steps`` and ``cfg.cache.stages`` are checked
against its stage names."""

from __future__ import annotations

import importlib

from omegaconf import DictConfig

from mlflow_pipeline.engine.spec import Pipeline, Stage
from mlflow_pipeline.errors import ConfigError


def load_pipeline(cfg: DictConfig) -> Pipeline:
    """The pipeline ``cfg.pipeline`` declares, with ``cfg.steps`` and ``cfg.cache.stages``
    checked against it. Raises ConfigError naming the key."""
    pipeline = import_pipeline(str(cfg.pipeline))
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
