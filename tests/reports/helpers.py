"""Checks on rendered reports (a valid, self-contained page; inline PNGs that decode to pictures)
and the JSON round trip the stages put report inputs through."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser

import matplotlib.image as mpimg
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def parse(document: str) -> _Collector:
    collector = _Collector()
    collector.feed(document)
    collector.close()
    assert document.startswith("<!DOCTYPE html>")
    assert collector.tags[:4] == ["html", "head", "meta", "title"]
    assert "style" in collector.tags
    assert "script" not in collector.tags
    assert "http://" not in document
    assert "https://" not in document
    return collector


def decoded_images(document: str) -> list[np.ndarray]:
    """Every <img> must be an inline PNG that decodes to a non-blank picture."""
    arrays = []
    for attrs in parse(document).images:
        src = attrs["src"]
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        raw = base64.b64decode(src[len(prefix) :], validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        pixels = mpimg.imread(io.BytesIO(raw))
        assert pixels.ndim == 3
        assert pixels.shape[0] >= 100
        assert pixels.shape[1] >= 150
        assert pixels[..., :3].std() > 0.01  # something was drawn
        assert attrs["alt"]
        arrays.append(pixels)
    return arrays


def visible_text(document: str) -> str:
    return " ".join(parse(document).text)


def count(document: str) -> int:
    return len(parse(document).images)


def from_json(document: dict) -> dict:
    """The stages hand these dicts over as JSON artifacts: render what comes back from JSON."""
    return json.loads(json.dumps(document))
