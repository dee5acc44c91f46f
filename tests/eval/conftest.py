"""Fixtures: benchmark files in the real layouts users download (see medsage.launch.demo.benchmarks)."""

from __future__ import annotations

import pytest

from medsage.launch.demo import benchmarks as demo_benchmarks


@pytest.fixture
def bench_root(tmp_path):
    """A data root with all five Table 1 benchmarks (small) in their release layouts."""
    return demo_benchmarks.make_demo_benchmarks(tmp_path / "medvqa")


@pytest.fixture
def layouts():
    """The layout writers (make_vqa_rad_original, make_slake, ..., write_png, write_parquet)."""
    return demo_benchmarks
