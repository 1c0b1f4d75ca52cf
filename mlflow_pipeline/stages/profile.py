"""profile: describe the incoming data and compare it with the champion's training data.

The profile (per column: type, counts, missing fraction, distinct values, statistics,
histogram or top categories; target balance) is logged as profile.json and an HTML report.
When a champion exists, today's data is compared with the profile of the data the champion was
trained on (its lineage names that profile run), per feature; the drift gate then warns or
stops the pipeline before anything is validated or trained (``validation.drift.policy``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from mlflow_pipeline.data import drift
from mlflow_pipeline.errors import DriftError
from mlflow_pipeline.registry.model_registry import ModelRegistry
from mlflow_pipeline.reports.profile import profile_report
from mlflow_pipeline.store import artifacts
from mlflow_pipeline.tags import Lineage, Runs

STAGE = "profile"
PROFILE_FILE = "profile.json"
log = logging.getLogger("mlflow_pipeline")


@dataclass(frozen=True)
class Reference:
    """The champion's training profile: which version, which run logged it, its digest. When
    there is none, ``reason`` says why."""

    about: dict[str, Any] | None = None
    run_id: str | None = None
    digest: str | None = None
    reason: str = ""

    @property
    def key(self) -> str:
        """What the profile stage's cache key takes from the reference."""
        if self.run_id is None:
            return f"none: {self.reason}"
        return f"{self.about['model']} v{self.about['version']} profile {self.digest}"


def reference(registry: ModelRegistry) -> Reference:
    """The profile of the data the champion was trained on (from its lineage tags)."""
    alias = registry.aliases.champion
    champion = registry.champion()
    if champion is None:
        return Reference(reason=f"no {alias} yet")
    version = str(champion.version)
    run_id = (champion.tags or {}).get(Lineage.RUN_PREFIX + STAGE)
    if not run_id:
        return Reference(
            reason=f"{alias} v{version} has no training profile (registered before profiling)"
        )
    try:
        tags = registry.client.get_run(run_id).data.tags
    except MlflowException:
        return Reference(reason=f"{alias} v{version}'s profile run {run_id} is not in this store")
    about = {"model": registry.name, "version": version, "alias": alias, "profile_run": run_id}
    return Reference(about=about, run_id=run_id, digest=tags.get(f"{Runs.DIGEST_OUTPUT}{STAGE}"))


def profile_data(cfg: DictConfig, raw: pd.DataFrame, *, registry: ModelRegistry) -> dict[str, Any]:
    """Returns ``{"profile": JSON, "drift": JSON, "drift_metrics": frame of (metric, value),
    "profile_report": HTML}``. The drift gate (``check_drift``) runs after they are logged."""
    current = drift.profile(raw, cfg)
    ref = reference(registry) if cfg.validation.drift.policy != "off" else None
    reference_profile = None
    if ref is None:
        result: dict[str, Any] = {"checked": False, "reason": "validation.drift.policy=off"}
    elif ref.run_id is None:
        result = {"checked": False, "reason": ref.reason}
    else:
        reference_profile = json.loads(artifacts.load_text(ref.run_id, PROFILE_FILE))
        result = drift.compare(reference_profile, raw, current, cfg, about=ref.about)
    values = drift.metrics(result) if result["checked"] else {}
    return {
        "profile": json.dumps(current, indent=1),
        "drift": json.dumps(result, indent=1),
        "drift_metrics": pd.DataFrame({"metric": list(values), "value": list(values.values())}),
        "profile_report": profile_report(
            current, result if result["checked"] else None, reference_profile
        ),
    }


def check_drift(cfg: DictConfig, outputs: dict[str, Any]) -> None:
    """The drift gate: columns changed against the champion (``validation.schema_changes``,
    when the contract is inferred) or drift with policy ``fail`` raise DriftError; drift with
    policy ``warn`` is logged."""
    result = json.loads(outputs["drift"])
    if not result["checked"]:
        log.info("[%s] %s", STAGE, drift.summary(result))
        return
    schema = result["schema"]
    changed = schema["missing"] or schema["extra"] or schema["kind_changed"]
    text = drift.summary(result)
    # With a user schema (data.schema) the validate gate decides which columns are allowed.
    if changed and cfg.validation.schema_changes == "error" and not cfg.data.schema:
        raise DriftError(
            "the columns changed against the champion's training data "
            f"({result['reference']['model']} v{result['reference']['version']}):\n"
            + "\n".join(line for line in text.splitlines() if line.startswith("  - column"))
            + "\n  Set validation.schema_changes=warning to continue anyway. "
            "The drift report is logged as reports/profile.html on the stage run.",
            stage=STAGE,
            drift=result,
        )
    if result["detected"] and cfg.validation.drift.policy == "fail":
        raise DriftError(
            text + "\n  validation.drift.policy=fail: stopped before training. "
            "The drift report is logged as reports/profile.html on the stage run.",
            stage=STAGE,
            drift=result,
        )
    if result["detected"] or changed:
        log.warning("[%s] %s", STAGE, text)
    else:
        log.info("[%s] %s", STAGE, text)
