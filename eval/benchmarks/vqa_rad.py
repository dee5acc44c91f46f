"""VQA-RAD (Lau et al., 2018): radiology questions on CT, MRI and X-ray; the test split has 451 items.

Three layouts are read (``layout`` says which one a load used):
- ``original`` (OSF): ``VQA_RAD Dataset Public.json`` and ``VQA_RAD Image Folder/``; the test split is
  the rows whose ``phrase_type`` starts with ``test`` (451), train is every other row (1,797);
- ``mevf`` (the ``data_RAD/`` folder MEVF and many VQA papers ship): ``trainset.json`` (3,064) and
  ``testset.json`` (451) with the same row fields, images in ``data_RAD/images/``; the split is the
  file, and a train row whose ``qid`` or (image, question) is also in ``testset.json`` is left out;
- ``parquet`` (Hugging Face copies, ``data/<split>-*.parquet`` with ``image``/``question``/``answer``).

Question type: the release's ``answer_type`` (CLOSED / OPEN) wherever a row has one (272 closed / 179
open in the test split). A parquet copy without it (flaviagiammarino/vqa-rad) falls back to the
documented rule "closed means the reference is yes or no", which gives 251 / 200: the 21 CLOSED items
with another answer ("left", "axial") count as open there; ``metadata["type_rule"]`` says which rule
made each item's type, and ``medsage eval doctor`` reports the split.

Quirks: some original rows write ``answer_type`` as ``"CLOSED "`` (trailing space) and answers as
numbers; a CLOSED item whose reference is not yes/no is scored as open text by ``medsage.answers``.
"""

from __future__ import annotations

from pathlib import Path

from medsage.eval.benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    BenchmarkInfo,
    parquet_rows,
    read_json_rows,
)
from medsage.records import Sample
from medsage.vocab import type_of_answer

ORIGINAL = "VQA_RAD Dataset Public.json"
MEVF_FILES = {"train": "trainset.json", "test": "testset.json"}
# Train sizes differ per layout (the test split is 451 in all three).
TRAIN_SIZES = {"original": 1797, "mevf": 3064, "parquet": 1793}


class VQARad(Benchmark):
    info = BenchmarkInfo(
        name="vqa_rad", title="VQA-RAD",
        published_at="https://osf.io/89kps/ (original JSON + images); MEVF's data_RAD/ (trainset.json, testset.json); "
                     "parquet copy: huggingface.co/datasets/flaviagiammarino/vqa-rad",
        published_sizes={"test": 451}, question_types=("closed", "open"), table1_column="VQA-RAD",
        group_by="organ", published_types={"test": {"closed": 272, "open": 179}},
    )

    def published_size(self) -> int | None:
        return TRAIN_SIZES.get(self.layout) if self.split == "train" else super().published_size()

    def _load(self) -> list[Sample]:
        if self.path.is_file() and self.path.suffix == ".json":
            if self.path.name in MEVF_FILES.values():
                return self._load_mevf(self.path.parent)
            return self._load_original(self.path)
        if (self.path / ORIGINAL).exists():
            return self._load_original(self.path / ORIGINAL)
        for folder in (self.path, self.path / "data_RAD"):
            if any((folder / f).exists() for f in MEVF_FILES.values()):
                return self._load_mevf(folder)
        return self._load_parquet()

    def _load_original(self, path: Path) -> list[Sample]:
        if self.split not in ("test", "train"):
            raise self.unknown_split(["test", "train"], path)
        self.layout, self.files_read = "original", [str(path)]
        keep = (lambda phrase: phrase.startswith("test")) if self.split == "test" else \
            (lambda phrase: not phrase.startswith("test"))
        rows = [(i, r) for i, r in enumerate(read_json_rows(path)) if keep(str(r.get("phrase_type", "")))]
        return [self._sample(r, f"{path} row {i}", path.parent / "VQA_RAD Image Folder", i) for i, r in rows]

    def _load_mevf(self, folder: Path) -> list[Sample]:
        present = [s for s, f in MEVF_FILES.items() if (folder / f).exists()]
        if self.split not in present:
            raise self.unknown_split(present, folder)
        path = folder / MEVF_FILES[self.split]
        self.layout, self.files_read = "mevf", [str(path)]
        rows = list(enumerate(read_json_rows(path)))
        if self.split == "train" and (folder / MEVF_FILES["test"]).exists():
            # Never let a test question into train, whatever the files hold.
            test = read_json_rows(folder / MEVF_FILES["test"])
            test_qids = {r.get("qid") for r in test}
            test_pairs = {(r.get("image_name"), str(r.get("question", "")).strip()) for r in test}
            before = len(rows)
            rows = [(i, r) for i, r in rows if r.get("qid") not in test_qids
                    and (r.get("image_name"), str(r.get("question", "")).strip()) not in test_pairs]
            self.stats = {"rows": before, "test_items_left_out": before - len(rows)}
        return [self._sample(r, f"{path} row {i}", folder / "images", i) for i, r in rows]

    def _sample(self, row: dict, where: str, images: Path, i: int) -> Sample:
        kind = str(row.get("answer_type", "")).strip().upper()
        if kind not in ("CLOSED", "OPEN"):
            raise BenchmarkDataError(f"{where}: answer_type {row.get('answer_type')!r} is neither CLOSED nor OPEN")
        for key in ("qid", "image_name", "question", "answer"):
            if key not in row:
                raise BenchmarkDataError(f"{where}: missing field {key!r}")
        return Sample(
            id=f"vqa_rad-{row['qid']}", source="vqa_rad", images=[self.local_image(images, row["image_name"], where)],
            question=str(row["question"]).strip(), answer=str(row["answer"]).strip(),
            question_type="closed" if kind == "CLOSED" else "open",
            metadata={"organ": row.get("image_organ"), "qtype": row.get("question_type"), "row": i,
                      "type_rule": "release answer_type"},
        )

    def _load_parquet(self) -> list[Sample]:
        samples = []
        for where, key, row in parquet_rows(self.find_parquet()):
            answer = str(row.get("answer", "")).strip()
            if not answer or not row.get("question"):
                raise BenchmarkDataError(f"{where}: empty question or answer")
            kind = str(row.get("answer_type") or "").strip().upper()
            if kind and kind not in ("CLOSED", "OPEN"):
                raise BenchmarkDataError(f"{where}: answer_type {row.get('answer_type')!r} is neither CLOSED nor OPEN")
            qtype = {"CLOSED": "closed", "OPEN": "open"}.get(kind) or type_of_answer(answer)
            samples.append(Sample(
                id=f"vqa_rad-{self.split}-{len(samples)}", source="vqa_rad",
                images=[self.image_file(row.get("image"), key, where)],
                question=str(row["question"]).strip(), answer=answer, question_type=qtype,
                metadata={"row": len(samples), "type_rule": "release answer_type" if kind else "yes/no reference"},
            ))
        return samples
