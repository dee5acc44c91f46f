"""PathVQA (He et al., 2020): pathology VQA.

Two layouts are read:
- ``pickle`` (the authors' release): ``qas/<split>/<split>_qa.pkl`` (a pickled list of dicts with
  ``image``, ``question``, ``answer``) and ``images/<split>/<image>.jpg``; its test pickle holds 6,761 rows;
- ``parquet`` (Hugging Face copy flaviagiammarino/path-vqa, ``data/<split>-*.parquet`` with
  ``image``/``question``/``answer``), de-duplicated by its publisher to 6,719 test rows (the count papers quote).
Neither marks the question type: closed means the reference is yes or no, everything else is open.

Rows are read as published, by default: 6,761 from the pickles, 6,719 from the parquet copy, each checked against
its own publisher's count. The parquet copy's exact de-duplication rule is not published, and medsage's own rule
(``dedup: true``: a row repeats an earlier one when its image — file name, or the embedded bytes' SHA-1 — question
and answer are the same after trimming, lower-casing and collapsing spaces; the first is kept) gave 6,717 on the
release's test pickle, a count nobody publishes; so it is a named option, never the default, and no published
size is checked with it. ``stats`` holds ``rows``, ``unique`` (by medsage's rule) and ``rule`` (which one was
applied); the evaluation summary and ``medsage eval doctor`` show them.

The pickles are Python pickles: only load a copy you trust (pickle can run code).
"""

from __future__ import annotations

import hashlib
import pickle

from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo, parquet_rows
from medsage.records import Sample
from medsage.vocab import type_of_answer

RELEASE_SIZES = {"test": 6761}  # rows in the authors' test pickle, as released


def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


class PathVQA(Benchmark):
    info = BenchmarkInfo(
        name="pathvqa", title="PathVQA",
        published_at="https://github.com/UCSD-AI4H/PathVQA (pickles + images); parquet copy: huggingface.co/datasets/flaviagiammarino/path-vqa",
        published_sizes={"test": 6719}, question_types=("closed", "open"), table1_column="PathVQA",
        group_by="question_type",
        notes=("test: 6,761 rows in the authors' pickles, 6,719 in the de-duplicated parquet copy; both read as "
               "published unless dedup: true",),
    )

    @property
    def dedup(self) -> bool:
        return bool(self.options.get("dedup", False))

    def published_size(self) -> int | None:
        if self.dedup:
            return None  # medsage's rule gives a count no publisher states
        return RELEASE_SIZES.get(self.split) if self.layout == "pickle" else super().published_size()

    def _load(self) -> list[Sample]:
        pkl = self.path / "qas" / self.split / f"{self.split}_qa.pkl"
        if pkl.exists():
            return self._load_pickle(pkl)
        found = sorted(p.parent.name for p in self.path.glob("qas/*/*_qa.pkl"))
        if found:
            raise self.unknown_split(found)
        return self._load_parquet()

    def _load_pickle(self, path) -> list[Sample]:
        self.layout, self.files_read = "pickle", [str(path)]
        images = self.path / "images" / self.split
        with path.open("rb") as fh:
            rows = pickle.load(fh)
        if not isinstance(rows, list):
            raise BenchmarkDataError(f"{path}: expected a pickled list of dicts, got {type(rows).__name__}")
        items = []
        for i, row in enumerate(rows):
            where = f"{path} row {i}"
            if not isinstance(row, dict) or not {"image", "question", "answer"} <= set(row):
                raise BenchmarkDataError(f"{where}: needs the keys image, question, answer")
            name = str(row["image"])
            name = name if "." in name else f"{name}.jpg"
            items.append((name, row, where, lambda n=name, w=where: self.local_image(images, n, w)))
        return self._unique(items)

    def _load_parquet(self) -> list[Sample]:
        items = []
        for where, key, row in parquet_rows(self.find_parquet()):
            cell = row.get("image")
            raw = cell.get("bytes") if isinstance(cell, dict) else None
            ident = hashlib.sha1(raw).hexdigest() if raw else str((cell or {}).get("path") if isinstance(cell, dict) else cell)
            items.append((ident, row, where, lambda c=cell, k=key, w=where: self.image_file(c, k, w)))
        return self._unique(items)

    def _unique(self, items) -> list[Sample]:
        """Samples in release order; with ``dedup``, repeats dropped by medsage's rule (the module docstring)."""
        seen, samples = set(), []
        for n, (ident, row, where, image) in enumerate(items):
            answer = str(row.get("answer") or "").strip()
            if not answer or not row.get("question"):
                raise BenchmarkDataError(f"{where}: empty question or answer")
            triplet = (ident, _norm(row["question"]), _norm(answer))
            if self.dedup and triplet in seen:
                continue
            seen.add(triplet)
            samples.append(Sample(
                id=f"pathvqa-{self.split}-{n}", source="pathvqa", images=[image()],
                question=str(row["question"]).strip(), answer=answer, question_type=type_of_answer(answer),
                modality="pathology", metadata={"question_type": type_of_answer(answer), "row": n},
            ))
        rule = ("repeats dropped by medsage's rule (image, question, answer after case and space folding)"
                if self.dedup else f"rows as published ({self.layout})")
        self.stats = {"rows": len(items), "unique": len(seen), "rule": rule}
        return samples
