"""Fixtures for the launch tests: an LVKC SFT dataset on disk and a per-session LLaMA-Factory schema cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sft_schema_cache(tmp_path_factory):
    """A private cache folder, so the first test reads LLaMA-Factory's dataclasses for real (not ~/.cache)."""
    import os

    cache = tmp_path_factory.mktemp("medsage_cache")
    old = os.environ.get("MEDSAGE_CACHE")
    os.environ["MEDSAGE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("MEDSAGE_CACHE", None)
    else:
        os.environ["MEDSAGE_CACHE"] = old


@pytest.fixture
def sft_dataset(demo_samples, tmp_path):
    """Twelve LVKC samples written by the real SFT writer: (dataset_dir, dataset name)."""
    from medsage.data_pipeline.writers import write_llava_sft

    data_dir = tmp_path / "demo"  # where demo_samples put the images
    write_llava_sft(demo_samples, data_dir, name="lvkc_sft")
    return data_dir, "lvkc_sft"


@pytest.fixture
def tiny_sft_overrides(tiny_model_dir, sft_dataset, tmp_path):
    """Hydra overrides for the tiny model on CPU (the demo's setting) writing under tmp_path/runs."""
    data_dir, dataset = sft_dataset

    def overrides(*extra: str, out_dir=None) -> list[str]:
        return ["model=tiny", f"model.path={tiny_model_dir}", "sft=tiny_cpu", "cluster=local_cpu",
                f"data.dataset_dir={data_dir}", f"data.dataset={dataset}",
                f"output.dir={out_dir or tmp_path / 'runs'}", *extra]

    return overrides
