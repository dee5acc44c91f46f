"""OmniMedVQA (Hu et al., 2024): multiple choice across imaging modalities (paper B.2, per modality).

Layout of the release: ``QA_information/Open-access/<dataset>.json`` (and ``Restricted-access/``),
each a list of rows with ``question_id``, ``question``, ``gt_answer`` (the option *text*),
``option_A`` ... ``option_D`` (two to four present), ``image_path`` relative to the release root
(``Images/...``), ``modality_type``, ``question_type``, ``dataset``.

The split is the access level: ``open-access`` (default, 88,996 items) or ``all``
(with the restricted part, 127,995). Results are broken down per ``modality_type``.
"""

from __future__ import annotations


from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo, read_json_rows
from medsage.records import Sample

LETTERS = "ABCD"


class OmniMedVQA(Benchmark):
    info = BenchmarkInfo(
        name="omnimedvqa", title="OmniMedVQA",
        published_at="https://huggingface.co/datasets/foreverbeliever/OmniMedVQA (OmniMedVQA.zip)",
        published_sizes={"open-access": 88996, "all": 127995}, question_types=("choice",),
        default_split="open-access", group_by="modality",
    )

    def _load(self) -> list[Sample]:
        qa = self.find("QA_information", "OmniMedVQA/QA_information")
        root = qa.parent
        folders = ["Open-access"] + (["Restricted-access"] if self.split == "all" else [])
        files = [f for folder in folders for f in sorted((qa / folder).glob("*.json"))]
        if not files:
            raise self._missing(qa, folders)
        samples = []
        for path in files:
            for i, row in enumerate(read_json_rows(path)):
                samples.append(self._sample(row, root, f"{path} row {i}"))
        return samples

    def _missing(self, qa, folders):
        from medsage.eval.benchmarks.base import MissingDataError

        return MissingDataError(self._missing_message([qa / f for f in folders], "no QA JSON files found"))

    def _sample(self, row: dict, root, where: str) -> Sample:
        for key in ("question_id", "question", "gt_answer", "image_path"):
            if key not in row:
                raise BenchmarkDataError(f"{where}: missing field {key!r}")
        options = {k: str(row[f"option_{k}"]).strip() for k in LETTERS if row.get(f"option_{k}") not in (None, "")}
        matches = [k for k, v in options.items() if v == str(row["gt_answer"]).strip()]
        if len(matches) != 1:
            raise BenchmarkDataError(f"{where}: gt_answer {row['gt_answer']!r} matches {len(matches)} of the "
                                     f"options {options}")
        return Sample(
            id=f"omnimedvqa-{row['question_id']}", source="omnimedvqa",
            images=[self.local_image(root, row["image_path"], where)], question=str(row["question"]).strip(),
            answer=matches[0], question_type="choice", options=options, modality=row.get("modality_type"),
            metadata={"modality": row.get("modality_type"), "dataset": row.get("dataset"),
                      "qtype": row.get("question_type")},
        )
