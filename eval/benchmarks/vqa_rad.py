"""VQA-RAD (Lau et al., 2018): radiology questions on CT, MRI and X-ray; the test split has 451 items.

Two layouts are read:
- the original release (OSF): ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``; the test
  split is the rows whose ``phrase_type`` starts with ``test`` and ``answer_type`` says CLOSED / OPEN;
- the common parquet copy (``data/test-*.parquet`` with ``image``/``question``/``answer``), which has
  no answer type: there, closed means the reference is yes or no.

Quirks: some original rows write ``answer_type`` as ``"CLOSED "`` (trailing space) and answers as
numbers; a CLOSED item whose reference is not yes/no (e.g. "left") is scored as open text by
``medsage.answers`` and says so in its reason.
"""

from __future__ import annotations


from medsage.eval.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    BenchmarkInfo,
    read_json_rows,
    read_parquet_rows,
)
from medsage.records import Sample
from medsage.vocab import type_of_answer


class VQARad(Benchmark):
    info = BenchmarkInfo(
        name="vqa_rad", title="VQA-RAD",
        published_at="https://osf.io/89kps/ (original JSON + images); parquet copy: huggingface.co/datasets/flaviagiammarino/vqa-rad",
        published_sizes={"test": 451}, question_types=("closed", "open"), table1_column="VQA-RAD",
        group_by="organ",
    )

    def _load(self) -> list[Sample]:
        original = self.path / "VQA_RAD Dataset Public.json"
        if self.path.is_file() and self.path.suffix == ".json":
            original = self.path
        if original.exists():
            return self._load_original(original)
        return self._load_parquet()

    def _load_original(self, path) -> list[Sample]:
        images = path.parent / "VQA_RAD Image Folder"
        rows = read_json_rows(path)
        samples = []
        for i, row in enumerate(rows):
            where = f"{path} row {i}"
            phrase = str(row.get("phrase_type", ""))
            if self.split == "test" and not phrase.startswith("test"):
                continue
            if self.split == "train" and phrase.startswith("test"):
                continue
            kind = str(row.get("answer_type", "")).strip().upper()
            if kind not in ("CLOSED", "OPEN"):
                raise BenchmarkDataError(f"{where}: answer_type {row.get('answer_type')!r} is neither CLOSED nor OPEN")
            for key in ("qid", "image_name", "question", "answer"):
                if key not in row:
                    raise BenchmarkDataError(f"{where}: missing field {key!r}")
            samples.append(Sample(
                id=f"vqa_rad-{row['qid']}", source="vqa_rad",
                images=[self.local_image(images, row["image_name"], where)],
                question=str(row["question"]).strip(), answer=str(row["answer"]).strip(),
                question_type="closed" if kind == "CLOSED" else "open",
                metadata={"organ": row.get("image_organ"), "qtype": row.get("question_type"), "row": i},
            ))
        return samples

    def _load_parquet(self) -> list[Sample]:
        path = self.find(f"data/{self.split}-*.parquet", f"{self.split}-*.parquet", f"{self.split}.parquet")
        samples = []
        for i, row in enumerate(read_parquet_rows(path)):
            where = f"{path} row {i}"
            answer = str(row.get("answer", "")).strip()
            if not answer or not row.get("question"):
                raise BenchmarkDataError(f"{where}: empty question or answer")
            samples.append(Sample(
                id=f"vqa_rad-{self.split}-{i}", source="vqa_rad",
                images=[self.image_file(row.get("image"), f"{path}:{i}", where)],
                question=str(row["question"]).strip(), answer=answer,
                question_type=type_of_answer(answer), metadata={"row": i},
            ))
        return samples
