"""profile: describe the incoming data and compare it with the champion's training data.

The profile (per column: its role, counts, missing fraction, distinct values and, as the role
says, statistics and a histogram, top categories, a date range or text lengths and words; the
target balance) is logged as profile.json and an HTML report.
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
from omegaconf import DictConfig

from mlflow_pipeline.data import drift
from mlflow_pipeline.errors import DriftError
from mlflow_pipeline.reports.profile import profile_report

STAGE = "profile"
PROFILE_FILE = "profile.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChampionProfile:
    """The champion's training profile: which version, which run logged it, its digest, and
    (when the stage runs) its content. When there is none, ``reason`` says why."""

    about: dict[str, Any] | None = None
    run_id: str | None = None
    digest: str | None = None
    reason: str = ""
    profile: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """What the profile stage's cache key takes from it."""
        if self.run_id is None:
            return f"none: {self.reason}"
        return f"{self.about['model']} v{self.about['version']} profile {self.digest}"


def profile_data(
    cfg: DictConfig, raw: pd.DataFrame, *, champion: ChampionProfile | None = None
) -> dict[str, Any]:
    """Returns ``{"profile": JSON, "drift": JSON, "drift_metrics": frame of (metric, value),
    "profile_report": HTML}``. ``champion``: the champion's training profile (None when
    ``validation.drift.policy=off``). The drift gate (``check_drift``) runs after they are
    logged."""
    checked = cfg.validation.drift.policy != "off" and champion is not None
    reference_profile = champion.profile if checked else None
    # Each column's role: data.columns, else inferred as train does; an inferred one gives way
    # to the role the champion's profile records, so both sides are described alike.
    current = drift.profile(raw, cfg, reference=reference_profile)
    if not checked:
        result: dict[str, Any] = {"checked": False, "reason": "validation.drift.policy=off"}
    elif reference_profile is None:
        result = {"checked": False, "reason": champion.reason}
    else:
        result = drift.compare(reference_profile, raw, current, cfg, about=champion.about)
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
