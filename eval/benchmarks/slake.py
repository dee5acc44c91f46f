"""SLAKE (Liu et al., 2021): bilingual radiology VQA; English test questions number 1061.

Layout of the release (``Slake1.0/``): ``train.json``, ``validate.json``, ``test.json`` (the Hugging Face
copy BoKelvin/SLAKE names the validation file ``validation.json``; both are read as split ``validation``),
each (a list of rows with ``qid``, ``img_name``
like ``xmlab102/source.jpg``, ``question``, ``answer``, ``answer_type`` CLOSED/OPEN, ``q_lang``
en/zh, ``modality``, ``location``) and ``imgs/``. English only by default (``q_lang``); pass
``languages=["en", "zh"]`` to keep both, which changes the split size.
"""

from __future__ import annotations


from medsage.eval.benchmarks.base import Benchmark, BenchmarkDataError, BenchmarkInfo, read_json_rows
from medsage.records import Sample

# release file stem -> split name
SPLIT_FILES = {"train": "train", "validate": "validation", "validation": "validation", "test": "test"}


class Slake(Benchmark):
    info = BenchmarkInfo(
        name="slake", title="SLAKE",
        published_at="https://www.med-vqa.com/slake/ (Slake1.0.zip); also huggingface.co/datasets/BoKelvin/SLAKE",
        published_sizes={"test": 1061, "validation": 1053, "train": 4919}, question_types=("closed", "open"),
        table1_column="SLAKE", group_by="modality", published_types={"test": {"closed": 416, "open": 645}},
    )

    def published_size(self) -> int | None:
        # The published counts are for English questions only.
        return super().published_size() if self.languages == ["en"] else None

    @property
    def languages(self) -> list[str]:
        return list(self.options.get("languages") or ["en"])

    def _load(self) -> list[Sample]:
        names = {"validation": ("validate", "validation")}.get(self.split, (self.split,))
        folder = self.path / "Slake1.0" if (self.path / "Slake1.0").is_dir() else self.path
        path = next((folder / f"{n}.json" for n in names if (folder / f"{n}.json").exists()), None)
        if path is None:
            found = sorted({SPLIT_FILES.get(f.stem, f.stem) for f in folder.glob("*.json") if f.stem in SPLIT_FILES})
            if found:
                raise self.unknown_split(found, folder)
            path = self.find(*(f"{n}.json" for n in names))
        self.layout, self.files_read = "release JSON", [str(path)]
        images = path.parent / "imgs"
        rows = read_json_rows(path)
        samples = []
        for i, row in enumerate(rows):
            where = f"{path} row {i}"
            if row.get("q_lang") not in self.languages:
                continue
            kind = str(row.get("answer_type", "")).strip().upper()
            if kind not in ("CLOSED", "OPEN"):
                raise BenchmarkDataError(f"{where}: answer_type {row.get('answer_type')!r} is neither CLOSED nor OPEN")
            for key in ("qid", "img_name", "question", "answer"):
                if key not in row:
                    raise BenchmarkDataError(f"{where}: missing field {key!r}")
            samples.append(Sample(
                id=f"slake-{row['qid']}", source="slake", images=[self.local_image(images, row["img_name"], where)],
                question=str(row["question"]).strip(), answer=str(row["answer"]).strip(),
                question_type="closed" if kind == "CLOSED" else "open",
                modality=row.get("modality"),
                metadata={"modality": row.get("modality"), "location": row.get("location"),
                          "content_type": row.get("content_type"), "lang": row.get("q_lang")},
            ))
        return samples
