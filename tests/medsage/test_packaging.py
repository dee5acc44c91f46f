"""pyproject.toml ships every sub-package and every recipe (a wheel, unlike an editable install, has only those)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping, listed = cfg["package-dir"], set(cfg["packages"])
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            dotted = ".".join([name, *rel.parts]) if rel.parts else name
            assert dotted in listed, f"{init.parent} holds a package {dotted!r} missing from pyproject's packages"


def test_recipes_are_package_data():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "**/*.yaml" in cfg["medsage.recipes"] and "**/*.json" in cfg["medsage.recipes"]


def test_the_viewer_page_is_package_data_read_as_files():
    from medsage.eval.view.page import ASSETS, asset

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "static/*" in cfg["medsage.eval.view"]
    for name in ASSETS:
        assert (ROOT / "eval" / "view" / "static" / name).read_text(encoding="utf-8") == asset(name)
    assert 'href="viewer.css"' in asset("index.html") and 'src="viewer.js"' in asset("index.html")
