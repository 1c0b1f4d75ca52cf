"""The promotion report: promoted, not promoted, and a first version without a champion."""

from __future__ import annotations

from mlflow_pipeline.reports.promotion import promotion_report
from tests.reports.helpers import decoded_images, visible_text


def promotion(**changes) -> dict:
    decision = {
        "promote": True,
        "reason": "challenger roc_auc 0.99 beats champion 0.98 by >= 0.005",
        "metric": "roc_auc",
        "greater_is_better": True,
        "challenger_score": 0.99,
        "champion_score": 0.98,
        "champion_version": "1",
        "model_name": "breast_cancer",
        "version": "2",
        "champion_version_after": "2",
    }
    decision.update(changes)
    return decision


def test_promotion_report_promoted():
    document = promotion_report(promotion())

    assert len(decoded_images(document)) == 1
    text = visible_text(document)
    assert "Promoted: version 2 is the champion now" in text
    assert "challenger roc_auc 0.99 beats champion 0.98 by &gt;= 0.005" in document
    assert "0.01" in text  # the difference


def test_promotion_report_not_promoted_and_first_version():
    rejected = promotion_report(
        promotion(promote=False, reason="<no gain>", champion_version_after="1")
    )
    assert "Not promoted: the champion stays version 1" in visible_text(rejected)
    assert "&lt;no gain&gt;" in rejected

    first = promotion_report(
        promotion(
            champion_score=None,
            champion_version=None,
            reason="no champion yet",
            version="1",
            champion_version_after="1",
        )
    )
    (image,) = decoded_images(first)
    assert image.shape[0] >= 200
    assert "no champion yet" in visible_text(first)
