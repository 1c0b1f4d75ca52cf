"""The shared plot helpers: figures become inline PNGs, and matplotlib is imported lazily."""

from __future__ import annotations

import io
import subprocess
import sys

import matplotlib.image as mpimg
import pytest

from mlflow_pipeline.reports.html import page
from mlflow_pipeline.reports.plots import DPI, FIG, figure_png, plot, shorten, text_inches
from tests.reports.helpers import PNG_SIGNATURE, decoded_images


def test_importing_reports_does_not_import_matplotlib():
    code = (
        "import sys, mlflow_pipeline.reports.profile, mlflow_pipeline.reports.validation, "
        "mlflow_pipeline.reports.evaluation, mlflow_pipeline.reports.promotion; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'sklearn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_figure_png_renders_at_the_report_resolution():
    def draw(fig):
        fig.add_subplot().plot([0, 1], [1, 0])

    png = figure_png(draw, (4.0, 2.5))

    assert png.startswith(PNG_SIGNATURE)
    pixels = mpimg.imread(io.BytesIO(png))
    assert pixels.shape[:2] == (round(2.5 * DPI), round(4.0 * DPI))
    assert pixels[..., :3].std() > 0.01


def test_plot_is_an_inline_png_image():
    def draw(fig):
        fig.add_subplot().bar(["a", "b"], [1, 2])

    (image,) = decoded_images(page("t", "s", [plot(draw, FIG, "bars <1>")]))
    assert image.shape[:2] == (round(FIG[1] * DPI), round(FIG[0] * DPI))


def test_a_failing_drawing_raises():
    def broken(fig):
        fig.add_subplot()
        raise ValueError("no data")

    with pytest.raises(ValueError, match="no data"):
        plot(broken, FIG, "broken")


def test_shorten_and_text_inches():
    assert shorten("a" * 40, 10) == "a" * 9 + "…"
    assert shorten(12) == "12"
    assert text_inches([]) == pytest.approx(0.2)
    assert text_inches(["abcd"]) > text_inches(["ab"])
