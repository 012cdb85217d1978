"""Checks of the HTML pages: strict html5lib parsing, the scan for anything that would fetch, headless
Chromium (Debian's ``chromium``; the browser tests skip, saying so, where it is not installed) and the
pixels of its screenshots."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

#: Debian's chromium (.ci/run installs it); Ubuntu's and Google's builds take the same flags.
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
NEEDS_CHROMIUM = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed, so the page is not rendered in a browser: "
    "apt-get install -y chromium (.ci/run installs it)",
)


def parse(page: str, strict: bool = True) -> Element:
    """The page as an element tree; in html5lib's strict mode any parse error raises (pytest-html's own
    page is read leniently)."""
    html5lib = pytest.importorskip("html5lib", reason="html5lib is in the test extra: pip install -e '.[test]'")
    return html5lib.HTMLParser(strict=strict, namespaceHTMLElements=False).parse(page)


def local(element: Element) -> str:
    return element.tag.rsplit("}", 1)[-1]  # inline SVG elements carry the SVG namespace


def classes(element: Element) -> set[str]:
    return set(element.get("class", "").split())


def charts(tree: Element) -> dict[str, Element]:
    return {svg.get("data-suite", ""): svg for svg in tree.iter() if "layer-chart" in classes(svg)}


def marks(chart: Element, kind: str = "mark") -> list[int]:
    return [int(e.get("data-layer", "-1")) for e in chart.iter() if kind in classes(e)]


def external_references(tree: Element, page: str) -> list[str]:
    """Anything that would make the browser fetch: URLs, src/href attributes (other than #anchors), url()s."""
    found = re.findall(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page, re.I)
    for element in tree.iter():
        for name, value in element.attrib.items():
            if name.rsplit("}", 1)[-1] in (
                "src",
                "href",
                "srcset",
                "action",
                "data",
                "poster",
            ) and not value.startswith("#"):
                found.append(f"{local(element)} {name}={value}")
        if local(element) in ("link", "img", "iframe", "object", "embed", "base"):
            found.append(local(element))
    found += [u for u in re.findall(r"url\(([^)]*)\)|@import", page) if not u.startswith("#")]
    return found


def chromium(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with nothing that reaches the network, a profile of its own, no sandbox (CI
    containers run as root)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={folder / 'chromium-profile'}",
        *args,
    ]
    env = {**os.environ, "HOME": str(folder)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def png_pixels(data: bytes) -> Iterator[tuple[int, int, int]]:
    """The RGB pixels of an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        if kind == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    raw, size = zlib.decompress(b"".join(chunks)), 3 if colour == 2 else 4
    stride, previous = width * size, bytearray(width * size)
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1 : (row + 1) * (stride + 1)])
        for i in range(stride):
            a, b = (line[i - size] if i >= size else 0), previous[i]
            c = previous[i - size] if i >= size else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = (0, a, b, (a + b) // 2, a if pa <= pb and pa <= pc else b if pb <= pc else c)[kind]
            line[i] = (line[i] + predictor) & 0xFF
        previous = line
        yield from (tuple(line[i : i + 3]) for i in range(0, stride, size))  # type: ignore[misc]


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
