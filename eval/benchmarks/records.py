"""Any medsage records file (``records.jsonl``) as a benchmark: for held-out splits of SAGE data,
the embedded demo and a lab's own items. No published size."""

from __future__ import annotations

from medsage.data_pipeline.layout import RECORDS
from medsage.eval.benchmarks.base import Benchmark, BenchmarkInfo
from medsage.records import Sample, read_records
from medsage.vocab import QUESTION_TYPES


class RecordsBenchmark(Benchmark):
    info = BenchmarkInfo(
        name="records", title="records", published_at="(your own medsage records file)", published_sizes={},
        question_types=QUESTION_TYPES, default_split="all", group_by="modality",
    )

    def _load(self) -> list[Sample]:
        path = self.path if self.path.is_file() else self.find(RECORDS)
        return [s for s in read_records(path) if s.kept]
