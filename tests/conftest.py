"""Fixtures shared by every test package. Tests build their own models and data: no network."""

from __future__ import annotations

import os

import pytest

# No test may reach a hub: loading code gets local paths only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder, built once per session (read-only for tests)."""
    from medsage.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture
def demo_samples(tmp_path):
    """Twelve generated LVKC samples (closed, choice, open) with images under tmp_path."""
    from medsage.data_pipeline.demo_samples import make_demo_samples

    return make_demo_samples(tmp_path / "demo", n=12)
