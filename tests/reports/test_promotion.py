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


def test_promotion_report_shows_the_gain_and_its_interval():
    comparison = {
        "metric": "roc_auc",
        "greater_is_better": True,
        "gain": 0.01,
        "low": 0.004,
        "high": 0.017,
        "confidence": 0.95,
        "resamples": 1000,
        "defined": 1000,
        "rows": 114,
        "seed": 42,
    }
    document = promotion_report(
        promotion(comparison=comparison, duplicate_of={"version": "1"}, moves=["a: v1 -> v2"])
    )
    assert len(decoded_images(document)) == 2  # the scores, the gain with its interval
    text = visible_text(document)
    assert "95% confidence interval of the gain" in text
    assert "[0.004, 0.017]" in text
    assert "1000 resamples of 114 test rows" in text
    assert "no: identical to version 1 (same content digest)" in text
    undefined = promotion_report(promotion(comparison={**comparison, "low": None, "high": None}))
    assert "could not be estimated" in visible_text(undefined)
    assert len(decoded_images(undefined)) == 1


def test_the_rows_the_champion_trained_on_and_the_labels_among_the_rest():
    where = "the test rows the champion did not train on"
    overlap_note = (
        "the champion trained on 132 of the 263 test rows: both models compared on the other 131"
    )
    labels_note = f"class 'snow' is not in {where}; both models compared on the 4 classes present"
    text = visible_text(
        promotion_report(
            promotion(
                training_overlap={
                    "note": overlap_note,
                    "rows_seen_by_champion": 132,
                    "rows_compared": 131,
                    "rows": 263,
                },
                labels={
                    "note": labels_note,
                    "missing": ["snow"],
                    "unseen": [],
                    "unseen_by_challenger": [],
                    "labels": ["drizzle", "fog", "rain", "sun"],
                    "rows_compared": 131,
                    "rows": 131,
                    "where": where,
                },
            )
        )
    )
    assert "Test rows the champion trained on" in text
    assert overlap_note in text
    assert labels_note in text
    assert f"Champion's classes not in {where}" in text
    assert f"Rows compared (of {where})" in text
