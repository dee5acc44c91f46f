"""OmniMedVQA (Hu et al., 2024): multiple choice across imaging modalities (paper B.2, per modality).

Layout of the release: ``QA_information/Open-access/<dataset>.json`` (and ``Restricted-access/``),
each a list of rows with ``question_id``, ``question``, ``gt_answer`` (the option *text*),
``option_A`` ... ``option_D`` (two to four present), ``image_path`` relative to the release root
(``Images/...``), ``modality_type``, ``question_type``, ``dataset``.

The split is the access level: ``open-access`` (default: the 42 ``Open-access/*.json`` files, 88,996
items, what MedEvalKit and most papers evaluate), ``restricted-access`` (38,999 items whose images
are not in the release: get them from each source dataset) or ``all`` (127,995). Results are broken
down per ``modality_type``; one release row writes ``modality`` instead, which is read as the same.
"""

from __future__ import annotations


from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo, read_json_rows
from medsage.records import Sample

LETTERS = "ABCD"


class OmniMedVQA(Benchmark):
    info = BenchmarkInfo(
        name="omnimedvqa", title="OmniMedVQA",
        published_at="https://huggingface.co/datasets/foreverbeliever/OmniMedVQA (OmniMedVQA.zip)",
        published_sizes={"open-access": 88996, "restricted-access": 38999, "all": 127995}, question_types=("choice",),
        default_split="open-access", group_by="modality",
    )

    def _load(self) -> list[Sample]:
        qa = self.find("QA_information", "OmniMedVQA/QA_information")
        root = qa.parent
        folders = {"open-access": ["Open-access"], "restricted-access": ["Restricted-access"],
                   "all": ["Open-access", "Restricted-access"]}.get(self.split)
        if folders is None:
            raise self.unknown_split([f.name.lower() for f in qa.iterdir() if f.is_dir()] + ["all"], qa)
        files = [f for folder in folders for f in sorted((qa / folder).glob("*.json"))]
        if not files:
            raise self._missing(qa, folders)
        self.layout, self.files_read = "QA_information/" + "+".join(folders), [str(f) for f in files]
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
        modality = row.get("modality_type", row.get("modality"))
        return Sample(
            id=f"omnimedvqa-{row['question_id']}", source="omnimedvqa",
            images=[self.local_image(root, row["image_path"], where)], question=str(row["question"]).strip(),
            answer=matches[0], question_type="choice", options=options, modality=modality,
            metadata={"modality": modality, "dataset": row.get("dataset"),
                      "qtype": row.get("question_type")},
        )
