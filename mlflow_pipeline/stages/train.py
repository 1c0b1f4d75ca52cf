"""train: fit the feature transformation and the estimator as one sklearn Pipeline.

Serving then applies exactly the transformation that training fitted.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

import pandas as pd
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline import schemas
from mlflow_pipeline.config import Task
from mlflow_pipeline.errors import ConfigError, StageError
from mlflow_pipeline.schemas import TrainedModel

if TYPE_CHECKING:
    import pandera.pandas as pa
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

# scikit-learn is imported where it is used: a rerun that is all cache hits never needs it
# (it is about a second of the start-up of every command).
STAGE = "train"
log = logging.getLogger(__name__)
# Keys of a model option that describe it rather than configure the estimator.
MODEL_META_KEYS = ("name", "estimator")


def feature_columns(
    cfg: DictConfig,
    frame: pd.DataFrame,
    contract: pa.DataFrameSchema | None = None,
    *,
    infer: bool = False,
) -> list[str]:
    """Every column the model sees: all but the target, ``data.ignore_columns`` and the
    columns whose role is not a feature (id, text, datetime, ignore) as ``contract`` records
    them. Without a contract: the roles set in ``data.columns``, and inferred from ``frame``
    only with ``infer`` (a small test set would infer differently from its training set)."""
    roles = column_roles_of(cfg, frame, contract, infer=infer)
    dropped = {cfg.data.target, *cfg.data.ignore_columns}
    dropped |= {name for name, role in roles.items() if not role.feature}
    return [c for c in frame.columns if c not in dropped]


def column_roles_of(
    cfg: DictConfig,
    frame: pd.DataFrame,
    contract: pa.DataFrameSchema | None,
    *,
    infer: bool = True,
) -> dict[str, schemas.ColumnRole]:
    """The roles ``contract`` records; without a contract (or roles in it), those set in
    config and, with ``infer``, inferred from ``frame``."""
    recorded = schemas.contract_roles(contract) if contract is not None else {}
    if recorded:
        return recorded
    columns = OmegaConf.to_container(cfg.data.columns, resolve=True)
    ignore = list(cfg.data.ignore_columns)
    roles = schemas.column_roles(frame, cfg.data.target, columns, ignore)
    return roles if infer else {n: r for n, r in roles.items() if not r.inferred}


def role_notices(roles: dict[str, schemas.ColumnRole]) -> list[str]:
    """One line per column left out of the features by an inferred role, with how to keep it."""
    what = {
        "id": "looks like an id",
        "text": "looks like free text",
        "datetime": "holds dates",
    }
    return [
        f"column '{name}' {what.get(role.role, role.role)} ({role.reason}): not a feature; set "
        f"+data.columns.{name}.role=categorical to use it"
        for name, role in roles.items()
        if role.inferred and not role.feature
    ]


def build_estimator(model: DictConfig, task: Task) -> BaseEstimator:
    """Instantiate ``model.estimator[task]`` with the option's other keys that it accepts.

    A model option may carry keys for its other task's estimator (``C`` for logistic
    regression, ``alpha`` for ridge); each estimator takes only the keys it knows.
    """
    target = model.estimator.get(Task(task).value)
    if not target:
        raise ConfigError(f"model '{model.name}' has no estimator for task '{Task(task).value}'")
    try:
        accepted = set(inspect.signature(get_class(target)).parameters)
    except Exception as exc:  # hydra wraps import failures in several types
        raise ConfigError(f"model.estimator.{Task(task).value}: cannot import {target}") from exc
    params: dict[str, Any] = {
        k: v
        for k, v in OmegaConf.to_container(model, resolve=True).items()
        if k not in MODEL_META_KEYS and k in accepted
    }
    return instantiate({"_target_": target, **params})


def build_features(
    features: DictConfig, numeric: list[str], categorical: list[str]
) -> ColumnTransformer:
    """The ColumnTransformer from ``conf/features``: numeric and string columns apart."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import make_pipeline

    numeric_steps = [
        instantiate(n) for n in (features.numeric_imputer, features.numeric_scaler) if n
    ]
    categorical_steps = [
        instantiate(n) for n in (features.categorical_imputer, features.categorical_encoder) if n
    ]
    transformers = []
    if numeric:
        transformers.append(
            ("numeric", make_pipeline(*numeric_steps) if numeric_steps else "passthrough", numeric)
        )
    if categorical:
        if not categorical_steps:
            raise ConfigError(
                f"features '{features.name}' has no categorical encoder, but the data has "
                f"string columns {categorical[:5]}"
            )
        transformers.append(("categorical", make_pipeline(*categorical_steps), categorical))
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)


def build_pipeline(cfg: DictConfig, features: pd.DataFrame) -> Pipeline:
    """Unfitted Pipeline(features -> estimator) for the columns of ``features``."""
    from sklearn.pipeline import Pipeline

    steps = [(f"transform_{i}", instantiate(t)) for i, t in enumerate(cfg.features.transformers)]
    if steps:  # the columns the column transformer sees are those the transformers return
        from sklearn.pipeline import Pipeline as Steps

        features = Steps(steps).fit_transform(features.head(1000))
        if not isinstance(features, pd.DataFrame):
            raise ConfigError(
                f"features.transformers of '{cfg.features.name}' must return a DataFrame "
                f"(got {type(features).__name__}): the columns are selected by name after them"
            )
    numeric = [c for c in features.columns if pd.api.types.is_numeric_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    return Pipeline(
        [
            *steps,
            ("features", build_features(cfg.features, numeric, categorical)),
            ("model", build_estimator(cfg.model, cfg.data.task)),
        ]
    )


def train(cfg: DictConfig, train: pd.DataFrame, contract: str | None = None) -> dict[str, Any]:
    """Returns ``{"model": TrainedModel}``; ``contract`` (pandera YAML) says which columns are
    features (see ``feature_columns``). Raises StageError when fitting fails."""
    schema = schemas.contract_from_yaml(contract) if contract else None
    for line in role_notices(column_roles_of(cfg, train, schema)):
        log.info("[%s] %s", STAGE, line)
    features = train[feature_columns(cfg, train, schema, infer=True)]
    pipeline = build_pipeline(cfg, features)
    try:
        pipeline.fit(features, train[cfg.data.target])
    except ValueError as exc:
        raise StageError(f"fitting {cfg.model.name} failed: {exc}", stage=STAGE) from exc
    return {"model": TrainedModel(estimator=pipeline, input_example=features.head(5))}
