"""The static page of ``medsage view``: ``static/index.html``, ``viewer.css`` and ``viewer.js``, package
data copied beside the report's data (no CDN, nothing fetched).

The page reads ``data/index.js`` (a compact index: one row of facet value numbers per item) and, for
the page on screen only, ``data/items-NNNNN.js`` chunks. Both are scripts rather than JSON fetched
with XHR because browsers refuse ``fetch`` on ``file://`` pages: the report must open from disk.
Every text from the data is set with ``textContent`` (model outputs are full of ``<TAGS>``), never
parsed as HTML. The filter state lives in the URL hash, so a filtered view can be linked to.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

ASSETS = ("index.html", "viewer.css", "viewer.js")


def asset(name: str) -> str:
    return resources.files("medsage.eval.view").joinpath("static", name).read_text(encoding="utf-8")


def write_page(out: Path) -> Path:
    """Copy the page's files into the report folder ``out``; returns the page to open."""
    from medsage.io import atomic_write_text

    for name in ASSETS:
        atomic_write_text(out / name, asset(name))
    return out / "index.html"
