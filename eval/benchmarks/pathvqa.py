"""PathVQA (He et al., 2020): pathology VQA; the test split has 6719 items (the paper's count).

Two layouts are read:
- the common parquet copy (``data/test-*.parquet`` with ``image``/``question``/``answer``);
- the original release: ``qas/test/test_qa.pkl`` (a pickled list of dicts with ``image``,
  ``question``, ``answer``) and ``images/test/<image>.jpg``.
Neither marks the question type: closed means the reference is yes or no, everything else is open.

The pickles are Python pickles: only load a copy you trust (pickle can run code).
"""

from __future__ import annotations

import pickle

from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo, read_parquet_rows
from medsage.records import Sample
from medsage.vocab import type_of_answer


class PathVQA(Benchmark):
    info = BenchmarkInfo(
        name="pathvqa", title="PathVQA",
        published_at="https://github.com/UCSD-AI4H/PathVQA (pickles + images); parquet copy: huggingface.co/datasets/flaviagiammarino/path-vqa",
        published_sizes={"test": 6719}, question_types=("closed", "open"), table1_column="PathVQA",
        group_by="question_type",
    )

    def _load(self) -> list[Sample]:
        pkl = self.path / "qas" / self.split / f"{self.split}_qa.pkl"
        if pkl.exists():
            return self._load_pickle(pkl)
        return self._load_parquet()

    def _load_pickle(self, path) -> list[Sample]:
        images = self.path / "images" / self.split
        with path.open("rb") as fh:
            rows = pickle.load(fh)
        if not isinstance(rows, list):
            raise BenchmarkDataError(f"{path}: expected a pickled list of dicts, got {type(rows).__name__}")
        samples = []
        for i, row in enumerate(rows):
            where = f"{path} row {i}"
            if not isinstance(row, dict) or not {"image", "question", "answer"} <= set(row):
                raise BenchmarkDataError(f"{where}: needs the keys image, question, answer")
            answer = str(row["answer"]).strip()
            name = str(row["image"])
            name = name if "." in name else f"{name}.jpg"
            samples.append(Sample(
                id=f"pathvqa-{self.split}-{i}", source="pathvqa", images=[self.local_image(images, name, where)],
                question=str(row["question"]).strip(), answer=answer, question_type=type_of_answer(answer),
                modality="pathology", metadata={"question_type": type_of_answer(answer), "row": i},
            ))
        return samples

    def _load_parquet(self) -> list[Sample]:
        path = self.find(f"data/{self.split}-*.parquet", f"{self.split}-*.parquet", f"{self.split}.parquet")
        samples = []
        for i, row in enumerate(read_parquet_rows(path)):
            where = f"{path} row {i}"
            answer = str(row.get("answer") or "").strip()
            if not answer or not row.get("question"):
                raise BenchmarkDataError(f"{where}: empty question or answer")
            samples.append(Sample(
                id=f"pathvqa-{self.split}-{i}", source="pathvqa",
                images=[self.image_file(row.get("image"), f"{path}:{i}", where)],
                question=str(row["question"]).strip(), answer=answer, question_type=type_of_answer(answer),
                modality="pathology", metadata={"question_type": type_of_answer(answer), "row": i},
            ))
        return samples
