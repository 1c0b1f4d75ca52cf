"""The matplotlib every report shares: one drawing function on a fresh figure -> an inline PNG.

matplotlib is imported inside ``figure_png`` only, so importing a report module stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from mlflow_pipeline.reports.html import png_image, truncate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Figure sizes in inches at DPI: small enough that a report with ~20 plots stays a few 100 KB.
DPI = 80
FIG = (5.0, 3.2)
THUMB = (3.4, 2.2)
_RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    # A fixed title position: the automatic one measures every tick label (slow, not needed).
    "axes.titley": 1.0,
    "axes.titlepad": 4.0,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    # Column names and categories are user strings: "$" must not switch on mathtext.
    "text.parse_math": False,
}
BLUE, ORANGE, RED, GREEN, GREY, AMBER = (
    "#1f77b4",
    "#ff7f0e",
    "#cf222e",
    "#2da44e",
    "#8c959f",
    "#bf8700",
)


def figure_png(
    draw: Callable[[Figure], None],
    size: tuple[float, float],
    *,
    left: float = 0.6,
    bottom: float = 0.45,
    top: float = 0.3,
    right: float = 0.15,
    hspace: float = 0.0,
) -> bytes:
    """Call ``draw`` on a fresh figure of ``size`` inches and return the figure as PNG bytes.

    Margins are in inches. They are fixed rather than left to a layout engine because
    constrained/tight layout draws every figure twice (half the rendering time); plots with
    long tick labels pass a margin from ``text_inches``. ``hspace`` is the gap in inches
    between stacked axes. Uses ``matplotlib.figure.Figure`` directly rather than pyplot: no
    backend switch in the host process and no global figure registry, so no figure is left
    open whatever ``draw`` does.
    """
    import matplotlib
    from matplotlib.figure import Figure

    width, height = size
    buffer = io.BytesIO()
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=size, dpi=DPI)
        try:
            fig.subplots_adjust(
                left=min(left / width, 0.7),
                right=1 - right / width,
                bottom=min(bottom / height, 0.6),
                top=1 - top / height,
                wspace=0.35,
                hspace=hspace,
            )
            draw(fig)
            fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
        finally:
            fig.clear()
    return buffer.getvalue()


def plot(
    draw: Callable[[Figure], None], size: tuple[float, float], alt: str, **margins: float
) -> str:
    """``figure_png`` as an embedded <img> tag with ``alt`` text, sized in pixels at DPI."""
    width, height = size
    png = figure_png(draw, size, **margins)
    return png_image(png, alt, round(width * DPI), round(height * DPI))


def text_inches(labels: Iterable[str], fontsize: float = 7) -> float:
    """A generous width estimate of the longest label, plus tick and padding."""
    longest = max((len(label) for label in labels), default=0)
    return 0.2 + longest * fontsize * 0.62 / 72


def shorten(value: Any, limit: int = 28) -> str:
    """A user value as a tick label or title part, cut to ``limit`` characters."""
    return truncate(str(value), limit)
