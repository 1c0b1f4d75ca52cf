"""The validation report: checks by status, quarantine, the failing-rows chart."""

from __future__ import annotations

from mlflow_pipeline.reports.validation import validation_report
from tests.reports.helpers import count, decoded_images, visible_text


def validation_result(**changes) -> dict:
    result = {
        "stage": "validate",
        "dataset": "raw",
        "rows": 1000,
        "rows_out": 990,
        "passed": False,
        "checks": [
            {
                "column": "income",
                "check": "not_null",
                "severity": "warning",
                "status": "warning",
                "failing_rows": 25,
                "examples": ["NaN"],
            },
            {
                "column": "age",
                "check": "in_range(0, 120)",
                "severity": "error",
                "status": "failed",
                "failing_rows": 10,
                "examples": ["-3", "500", "<b>x</b>"],
            },
            {
                "column": "zip",
                "check": "str_length(5)",
                "severity": "error",
                "status": "quarantined",
                "failing_rows": 4,
                "examples": ["1234"],
            },
            {
                "column": "id",
                "check": "unique",
                "severity": "error",
                "status": "passed",
                "failing_rows": 0,
                "examples": [],
            },
        ],
        "quarantine": {
            "enabled": True,
            "max_fraction": 0.05,
            "rows": 10,
            "fraction": 0.01,
            "artifact": "quarantine/raw.csv",
        },
    }
    result.update(changes)
    return result


def test_validation_report_failed():
    document = validation_report(validation_result())

    assert len(decoded_images(document)) == 1
    text = visible_text(document)
    assert "Failed: 1 check failed" in text
    assert "1,000 rows in, 990 rows out" in text
    assert "quarantine/raw.csv" in text
    assert "in_range(0, 120)" in text
    assert "&lt;b&gt;x&lt;/b&gt;" in document
    checks = document[document.index("<h2>Checks</h2>") :]
    order = [checks.index(f"<td>{c}</td>") for c in ("age", "zip", "income", "id")]
    assert order == sorted(order)  # failed, quarantined, warning, passed
    assert '<tr class="st-failed"><td>age</td>' in checks


def test_validation_report_passed_with_warnings_and_no_quarantine():
    result = validation_result(passed=True, quarantine=None)
    result["checks"] = [c for c in result["checks"] if c["status"] in ("warning", "passed")]

    document = validation_report(result)

    assert len(decoded_images(document)) == 1
    text = visible_text(document)
    assert "Passed with warnings: 1 check (1 warning)" in text
    assert "Quarantine is not configured" in text


def test_validation_report_clean_pass_has_no_chart():
    result = validation_result(passed=True, rows_out=1000)
    result["checks"] = [c for c in result["checks"] if c["status"] == "passed"]
    result["quarantine"]["rows"] = 0
    result["quarantine"]["fraction"] = 0.0

    document = validation_report(result)

    assert count(document) == 0
    assert "Passed: all 1 check passed" in visible_text(document)
    assert "Failing rows per check" not in document


def test_validation_report_failed_by_quarantine_over_its_limit():
    result = validation_result(rows_out=900)
    result["checks"] = [c for c in result["checks"] if c["status"] != "failed"]
    result["quarantine"].update(rows=100, fraction=0.1)

    document = validation_report(result)

    text = visible_text(document)
    assert "Failed: quarantined 10.0% of rows, over the 5.0% limit" in text
    assert len(decoded_images(document)) == 1
