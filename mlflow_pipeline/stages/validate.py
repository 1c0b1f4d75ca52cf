"""validate: hold the raw data to the data contract (a user's pandera schema, or inferred) and
the rules of ``conf/validation``; quarantine failing rows when allowed."""

from __future__ import annotations

import logging

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from mlflow_pipeline import schemas
from mlflow_pipeline.data.validation import check, summarize
from mlflow_pipeline.reports.validation import validation_report

STAGE = "validate"
log = logging.getLogger(__name__)


def validate_data(cfg: DictConfig, raw: pd.DataFrame) -> dict[str, object]:
    """Returns ``{"validated": coerced frame, "contract": the contract as pandera YAML,
    "validation_report": HTML, "quarantine": CSV of dropped rows or None, "warnings": CSV of
    failed warning checks or None}``.

    Raises DataValidationError (naming column, check and failing rows) when the raw data breaks
    the contract or an error-severity rule beyond what quarantine may drop, and ConfigError
    when ``data.schema`` is not a usable schema file.
    """
    data = cfg.data
    columns = OmegaConf.to_container(data.columns, resolve=True)
    ignore = list(data.ignore_columns)
    if data.schema:
        contract = schemas.load_contract(data.schema, data.target)
        contract = schemas.with_roles(contract, raw, data.target, columns, ignore)
    else:
        contract = schemas.infer_contract(raw, data.target, data.task, columns, ignore)
    gate = schemas.gate(contract, cfg)
    quarantine = cfg.validation.quarantine
    if quarantine.enabled:
        gate.quarantine = quarantine.max_fraction
    result = check(
        raw, gate, stage=STAGE, dataset="raw", max_lines=cfg.validation.max_message_failures
    )
    if result.quarantined is not None:
        log.warning(
            "[%s] quarantined %d of %d row(s) (%.2f%%, at most %.2f%% allowed); logged as "
            "quarantine/raw.csv",
            STAGE,
            len(result.quarantined),
            result.rows,
            100 * len(result.quarantined) / max(result.rows, 1),
            100 * float(quarantine.max_fraction),
        )
    if not result.warnings.empty:
        log.warning(
            summarize(
                result.warnings,
                stage=STAGE,
                dataset="raw",
                max_lines=cfg.validation.max_message_failures,
                what="has warnings",
                artifact="warnings",
            )
        )
    return {
        "validated": result.frame,
        "contract": schemas.contract_to_yaml(contract),
        "validation_report": validation_report(result.report()),
        "quarantine": None
        if result.quarantined is None
        else result.quarantined.to_csv(index=False),
        "warnings": None if result.warnings.empty else result.warnings.to_csv(index=False),
    }
