"""``ingest_all``: run a source adapter over every input, as ``medsage data ingest`` does, for the tests."""

from __future__ import annotations

from medsage.data_pipeline.quality import QualityConfig
from medsage.data_pipeline.questions import QuestionConfig
from medsage.data_pipeline.rois import RoIConfig
from medsage.data_pipeline.sources.base import build_samples
from medsage.registry import SOURCES


def ingest_all(name, root, tmp_path, **options):
    adapter = SOURCES.get(name)(root, tmp_path / "images", **options)
    kept, rejected = [], []
    for i, key in enumerate(adapter.inputs()):
        samples, rejection = build_samples(adapter, key, i, quality=QualityConfig(), questions=QuestionConfig(),
                                           rois=RoIConfig())
        kept += samples
        rejected += [rejection] if rejection else []
    # Every input is exactly one kept record or one rejection.
    assert len(kept) + len(rejected) == len(adapter.inputs())
    return adapter, kept, rejected
