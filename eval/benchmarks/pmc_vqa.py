"""PMC-VQA (Zhang et al., 2023): multiple choice (A-D) on figures from PubMed Central; 2000 test items.

Layout of the release: ``test_2.csv`` (the paper's 2k test set; ``test_clean.csv`` is the cleaned
variant) with ``Figure_path``, ``Question``, ``Choice A`` ... ``Choice D`` and the answer as
``Answer_label`` (a letter) or ``Answer`` (a letter, ``"B:Brain"`` or the option text), and the
figures under ``images/`` (``figures/`` in some copies).

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
        name = "test_clean.csv" if self.split == "test_clean" else "test_2.csv"
        path = self.path if self.path.is_file() else self.find(name)
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
