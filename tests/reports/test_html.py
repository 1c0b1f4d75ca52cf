"""The shared HTML helpers: numbers for people, escaped tables, one self-contained page."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlflow_pipeline.reports.html import Raw, banner, figures, fmt, page, pct, plural, table
from tests.reports.helpers import parse, visible_text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "—"),
        (True, "yes"),
        (1234567, "1,234,567"),
        (np.int64(42), "42"),
        (0.0, "0"),
        (math.nan, "—"),
        (-math.inf, "-inf"),
        (0.0001234, "1.234e-04"),
        (2_500_000.0, "2.500e+06"),
        (1234.56, "1,234.6"),
        (0.123456, "0.1235"),
        ("text", "text"),
    ],
)
def test_fmt(value, text):
    assert fmt(value) == text


def test_pct_and_plural():
    assert [pct(0.25), pct(0.0004), pct(0), pct(None), pct(math.nan)] == [
        "25.0%",
        "<0.1%",
        "0.0%",
        "—",
        "—",
    ]
    assert [plural(1, "check"), plural(1200, "check")] == ["1 check", "1,200 checks"]


def test_table_escapes_cells_but_not_raw_ones():
    document = table(
        ["<Name>", "Count"],
        [["<b>", 1200], ["x", Raw("<code>y</code>", css="status")]],
        row_classes=["st-failed", ""],
    )

    assert "<th>&lt;Name&gt;</th>" in document
    assert '<tr class="st-failed"><td>&lt;b&gt;</td><td class="num">1,200</td></tr>' in document
    assert '<td class="status"><code>y</code></td>' in document


def test_key_value_table_has_a_header_column():
    assert table(None, [["Rows", 3]]) == (
        '<table><tbody><tr><th>Rows</th><td class="num">3</td></tr></tbody></table>'
    )


def test_page_is_self_contained_and_escaped():
    document = page(
        "Report <1>",
        "a & b",
        [banner("ok", "fine <really>"), figures([("<img alt='x'>", "caption & more")])],
    )

    text = visible_text(document)  # parse() checks the skeleton: no scripts, no URLs
    assert "Report <1>" in text
    assert "fine <really>" in text
    assert "caption & more" in text
    assert parse(document).tags.count("figure") == 1
    assert "<h1>Report &lt;1&gt;</h1>" in document
