"""validate: hold the raw data to the data contract (a user's pandera schema, or inferred)."""

from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from mlflow_pipeline import schemas
from mlflow_pipeline.validation import validate

STAGE = "validate"


def validate_data(cfg: DictConfig, raw: pd.DataFrame) -> dict[str, object]:
    """Returns ``{"validated": coerced frame, "contract": the contract as pandera YAML}``.

    Raises DataValidationError (naming column, check and failing rows) when the raw data breaks
    the contract, and ConfigError when ``data.schema`` is not a usable schema file.
    """
    data = cfg.data
    if data.schema:
        contract = schemas.load_contract(data.schema, data.target)
    else:
        contract = schemas.infer_contract(raw, data.target, data.task)
    gate = schemas.with_task_checks(contract, data.target, data.task)
    validated = validate(
        raw,
        gate,
        stage=STAGE,
        dataset="raw",
        max_lines=cfg.validation.max_message_failures,
    )
    return {"validated": validated, "contract": schemas.contract_to_yaml(contract)}
