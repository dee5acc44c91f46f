"""MMMU-Med (Yue et al., 2024): the five medical subjects of MMMU, validation split (30 items each).

Layout of the release (huggingface.co/datasets/MMMU/MMMU): one folder per subject with
``validation-00000-of-00001.parquet``; columns ``id``, ``question``, ``options`` (a *string* holding a
Python list, e.g. ``"['A', 'B']"``), ``answer`` (a letter for multiple-choice, text for open),
``question_type`` (``multiple-choice`` / ``open``), ``image_1`` ... ``image_7`` ({bytes, path} or null),
``subfield``, ``img_type``.

Quirks: the question (and sometimes an option) refers to images as ``<image N>``; the placeholders
are kept in the question text and ``medsage.eval.prompting`` puts image N where ``<image N>``
stands. An option that is itself an image (``"<image 2>"``) is kept as that text. Open answers may
be a list string (``"['6', '6.0']"``): any of them is accepted, the first is the reference.
"""

from __future__ import annotations

import ast
import re

from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo, read_parquet_rows
from medsage.records import Sample

SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
            "Public_Health")
IMAGE_REF_RE = re.compile(r"<image (\d+)>")


def parse_options(cell: object, where: str) -> list[str]:
    if cell is None or cell == "":
        return []
    if isinstance(cell, list):
        return [str(o) for o in cell]
    try:
        value = ast.literal_eval(str(cell))
    except (ValueError, SyntaxError):
        raise BenchmarkDataError(f"{where}: options {str(cell)[:60]!r} is not a list string") from None
    if not isinstance(value, list):
        raise BenchmarkDataError(f"{where}: options must be a list, got {type(value).__name__}")
    return [str(o) for o in value]


class MMMUMed(Benchmark):
    info = BenchmarkInfo(
        name="mmmu_med", title="MMMU-Med",
        published_at="https://huggingface.co/datasets/MMMU/MMMU (subject folders with validation parquet)",
        published_sizes={"validation": 150, "dev": 25}, question_types=("choice", "open"), default_split="validation",
        table1_column="MMMU", group_by="subject",
    )

    @property
    def subjects(self) -> list[str]:
        return list(self.options.get("subjects") or SUBJECTS)

    def published_size(self) -> int | None:
        per_subject = {"validation": 30, "dev": 5}.get(self.split)
        return per_subject * len(self.subjects) if per_subject else None

    def _load(self) -> list[Sample]:
        samples = []
        self.layout = "parquet per subject"
        for subject in self.subjects:
            if not (self.path / subject).is_dir():
                self.find(f"{subject}/{self.split}-*.parquet")  # MissingDataError naming the subject folder
            found = sorted({f.name.split("-")[0].split(".")[0] for f in (self.path / subject).glob("*.parquet")})
            if found and self.split not in found:
                raise self.unknown_split(found, self.path / subject)
            path = self.find(f"{subject}/{self.split}-*.parquet", f"{subject}/{self.split}.parquet")
            self.files_read.append(str(path))
            for i, row in enumerate(read_parquet_rows(path)):
                samples.append(self._sample(row, subject, f"{path} row {i}", f"{path}:{i}"))
        return samples

    def _sample(self, row: dict, subject: str, where: str, key: str) -> Sample:
        images = [self.image_file(row[f"image_{n}"], f"{key}:image_{n}", where)
                  for n in range(1, 8) if row.get(f"image_{n}") is not None]
        if not images:
            raise BenchmarkDataError(f"{where}: item has no image")
        text = str(row.get("question") or "")
        options = parse_options(row.get("options"), where)
        refs = {int(n) for n in IMAGE_REF_RE.findall(text + " ".join(options))}
        if refs and max(refs) > len(images):
            raise BenchmarkDataError(f"{where}: question refers to <image {max(refs)}> but the item has "
                                     f"{len(images)} image(s)")
        answer = str(row.get("answer") or "").strip()
        meta = {"subject": subject, "subfield": row.get("subfield"), "img_type": row.get("img_type")}
        if options and row.get("question_type", "multiple-choice") == "multiple-choice":
            letters = {chr(ord("A") + k): o for k, o in enumerate(options)}
            if answer not in letters:
                raise BenchmarkDataError(f"{where}: answer {answer!r} is not one of the letters {sorted(letters)}")
            return Sample(id=f"mmmu_med-{row['id']}", source="mmmu_med", images=images, question=text,
                          answer=answer, question_type="choice", options=letters, metadata=meta)
        accepted = [answer]
        if answer.startswith("["):
            try:
                accepted = [str(a) for a in ast.literal_eval(answer)] or [answer]
            except (ValueError, SyntaxError):
                pass
        return Sample(id=f"mmmu_med-{row['id']}", source="mmmu_med", images=images, question=text,
                      answer=accepted[0], question_type="open", metadata={**meta, "accepted_answers": accepted})
