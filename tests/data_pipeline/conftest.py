"""Fixtures: generated sources in their real download layouts (see medsage.launch.demo.sources)."""

from __future__ import annotations

import pytest

from medsage.launch.demo.sources import (
    MAKERS,
    make_deeplesion,
    make_pubmedvision,
    make_roboflow_coco,
    make_roboflow_yolo,
    textured,
)


@pytest.fixture
def deeplesion_root(tmp_path):
    return make_deeplesion(tmp_path / "DeepLesion", defects=True)


@pytest.fixture
def coco_root(tmp_path):
    return make_roboflow_coco(tmp_path / "roboflow_coco")


@pytest.fixture
def yolo_root(tmp_path):
    return make_roboflow_yolo(tmp_path / "roboflow_yolo")


@pytest.fixture
def pubmedvision_root(tmp_path):
    return make_pubmedvision(tmp_path / "PubMedVision")


@pytest.fixture
def make_source():
    """``make_source(kind, root, **kw)``: write a generated source of that kind at ``root``."""
    return lambda kind, root, **kw: MAKERS[kind](root, **kw)


@pytest.fixture
def picture():
    """``picture(seed, size=128)``: a CT-like 8-bit array (see ``textured``)."""
    return textured
