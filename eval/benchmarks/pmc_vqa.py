"""PMC-VQA (Zhang et al., 2023): multiple choice (A-D) on figures from PubMed Central; 2000 test items.

Both test files papers use are read; which one a run used is its split, recorded in ``files_read``
(``run.json`` and ``medsage eval doctor`` show it):
- split ``test``: ``test_2.csv`` (``test2.csv`` in the dataset card; the 2,000-item version-2 test set
  MedEvalKit reads), header ``index, Figure_path, Caption, Question, Choice A .. Choice D, Answer,
  split``, figures under ``figures/`` or ``images/``;
- split ``test_clean``: ``test_clean.csv`` (version 1's manually checked 2,000 items), header
  ``Figure_path, Question, Answer, Choice A .. Choice D, Answer_label``, where ``Answer`` is the
  option text and ``Answer_label`` the letter; figures under ``images/``;
- split ``train``: ``train_2.csv`` / ``train2.csv`` (version 2) or ``train.csv`` (version 1), read the same
  way (the contamination audit compares it with the test split).
The answer is ``Answer_label`` (a letter) when present, else ``Answer`` (a letter, ``"B:Brain"`` or
the option text).

Quirks: option cells carry their own letter prefix (``"A:Gallbladder "``), stripped here so option
text matching works; trailing spaces are common.
"""

from __future__ import annotations

import csv
import re

from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo
from medsage.records import Sample

_PREFIX_RE = re.compile(r"^\s*\(?([A-D])\)?\s*[:.)]\s*")
LETTERS = "ABCD"
SPLIT_FILES = {"test": ("test_2.csv", "test2.csv"), "test_clean": ("test_clean.csv",),
               "train": ("train_2.csv", "train2.csv", "train.csv")}  # train: for `medsage data audit`


def option_text(cell: str) -> str:
    return _PREFIX_RE.sub("", cell or "", count=1).strip()


def answer_letter(row: dict, options: dict[str, str]) -> str | None:
    label = (row.get("Answer_label") or "").strip().upper()
    if label in options:
        return label
    answer = (row.get("Answer") or "").strip()
    if answer.upper() in options:
        return answer.upper()
    if m := _PREFIX_RE.match(answer):
        return m.group(1)
    by_text = [k for k, v in options.items() if v.lower() == answer.lower()]
    return by_text[0] if len(by_text) == 1 else None


class PMCVQA(Benchmark):
    info = BenchmarkInfo(
        name="pmc_vqa", title="PMC-VQA",
        published_at="https://huggingface.co/datasets/xmcmic/PMC-VQA (test_2.csv, test_clean.csv, images.zip)",
        published_sizes={"test": 2000, "test_clean": 2000}, question_types=("choice",), table1_column="PMC-VQA",
    )

    def _load(self) -> list[Sample]:
        if self.path.is_file():
            path = self.path
        else:
            names = SPLIT_FILES.get(self.split)
            present = [s for s, files in SPLIT_FILES.items() if any((self.path / f).exists() for f in files)]
            if names is None or (present and self.split not in present):
                raise self.unknown_split(present)
            path = self.find(*names)
        self.layout, self.files_read = path.name, [str(path)]
        root = path.parent
        folders = [root / "images", root / "figures", root]
        samples = []
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            needed = {"Figure_path", "Question", *(f"Choice {k}" for k in LETTERS)}
            if missing := needed - set(reader.fieldnames or []):
                raise BenchmarkDataError(f"{path}: missing column(s) {sorted(missing)}")
            for i, row in enumerate(reader, start=2):  # row numbers as a spreadsheet shows them
                where = f"{path} row {i}"
                options = {k: option_text(row[f"Choice {k}"]) for k in LETTERS if option_text(row[f"Choice {k}"])}
                letter = answer_letter(row, options)
                if letter is None:
                    raise BenchmarkDataError(f"{where}: answer {row.get('Answer')!r} / {row.get('Answer_label')!r} "
                                             f"names none of the options {options}")
                figure = row["Figure_path"].strip()
                folder = next((f for f in folders if (f / figure).exists()), folders[0])
                samples.append(Sample(
                    id=f"pmc_vqa-{i - 2}", source="pmc_vqa", images=[self.local_image(folder, figure, where)],
                    question=row["Question"].strip(), answer=letter, question_type="choice", options=options,
                    metadata={"figure": figure, "row": i},
                ))
        return samples
