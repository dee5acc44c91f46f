"""Benchmark files generated in the real layouts users download (small, but the same shape).

Used by the tests and by the demo (`medsage eval demo-benchmarks OUT`)."""

from __future__ import annotations

import csv
import io
import json
import pickle
from pathlib import Path



def png_bytes(shade: int = 120, size: int = 56) -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (10, 10, 10))
    ImageDraw.Draw(img).ellipse([8, 8, size - 8, size - 8], fill=(shade, shade, shade))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, shade: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(shade))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_vqa_rad_original(root: Path, n_test: int = 4, n_train: int = 2) -> Path:
    rows = []
    for i in range(n_test + n_train):
        name = f"synpic{i}.jpg"
        write_png(root / "VQA_RAD Image Folder" / name, 60 + i)
        rows.append(_vqa_rad_row(i, name, "test_freeform" if i < n_test else "freeform"))
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(rows))
    return root


def _vqa_rad_row(i: int, name: str, phrase: str) -> dict:
    """One row with the fields of the release JSON (and of MEVF's trainset/testset.json)."""
    closed = i % 2 == 0
    return {"qid": 1000 + i, "image_name": name, "image_organ": "CHEST" if i % 3 else "HEAD",
            "answer": "Yes" if closed else "left lung", "answer_type": "CLOSED " if closed else "OPEN",
            "question_type": "PRES", "question": f"Is there a mass? ({i})" if closed else "Where is the mass?",
            "phrase_type": phrase}


def make_vqa_rad_mevf(root: Path, n_test: int = 3, n_train: int = 4, leak: bool = True) -> Path:
    """MEVF's ``data_RAD/``: ``trainset.json`` / ``testset.json`` + ``images/``. ``leak`` repeats the first
    test question in trainset.json, as a careless re-split would, so the loader must leave it out."""
    folder = root / "data_RAD"
    test, train = [], []
    for i in range(n_test + n_train):
        name = f"synpic{i}.jpg"
        write_png(folder / "images" / name, 60 + i)
        # MEVF's test rows carry phrase types without a "test" prefix: the file is the split.
        (test if i < n_test else train).append(_vqa_rad_row(i, name, "freeform" if i % 2 else "para"))
    if leak and test:
        train.append(dict(test[0]))
    (folder / "testset.json").write_text(json.dumps(test))
    (folder / "trainset.json").write_text(json.dumps(train))
    return root


def make_vqa_rad_parquet(root: Path, n: int = 3, answer_type: bool = False) -> Path:
    """The Hugging Face copy (image/question/answer); ``answer_type`` adds the release's column, as other
    copies carry it (row 2 is then a CLOSED item whose answer is not yes/no)."""
    rows = [{"image": {"bytes": png_bytes(50 + i), "path": f"img{i}.jpg"}, "question": f"q{i}?",
             "answer": ["yes", "no", "right kidney"][i % 3]} for i in range(n)]
    if answer_type:
        for i, row in enumerate(rows):
            row["answer_type"] = "CLOSED" if i % 4 != 3 else "OPEN"
    write_parquet(root / "data" / "test-00000-of-00001-abc.parquet", rows)
    write_parquet(root / "data" / "train-00000-of-00001-abc.parquet", rows[:1])
    return root


def make_slake(root: Path, n_en: int = 3, n_zh: int = 2, split_file: str = "test.json") -> Path:
    """``Slake1.0/<split_file>`` + ``imgs/`` (the release names validation ``validate.json``, the
    Hugging Face copy ``validation.json``)."""
    rows = []
    for i in range(n_en + n_zh):
        name = f"xmlab{i}/source.jpg"
        write_png(root / "Slake1.0" / "imgs" / name, 40 + i)
        rows.append({"img_id": i, "img_name": name, "question": f"Does the picture contain liver? {i}",
                     "answer": "No" if i % 2 else "Yes", "q_lang": "en" if i < n_en else "zh",
                     "location": "Abdomen", "modality": "CT" if i % 2 else "MRI", "answer_type": "CLOSED",
                     "base_type": "vqa", "content_type": "Organ", "triple": ["vhead", "_", "_"], "qid": 500 + i})
    (root / "Slake1.0" / split_file).write_text(json.dumps(rows, ensure_ascii=False))
    return root / "Slake1.0"


def make_pathvqa_parquet(root: Path, n: int = 3) -> Path:
    rows = [{"image": {"bytes": png_bytes(90 + i), "path": None}, "question": f"is this tissue inflamed {i}?",
             "answer": ["yes", "no", "hematoxylin"][i % 3]} for i in range(n)]
    write_parquet(root / "data" / "test-00000-of-00002.parquet", rows)
    return root


def make_pathvqa_pickles(root: Path, n: int = 3, repeats: int = 0) -> Path:
    """``qas/test/test_qa.pkl`` + ``images/test/``; ``repeats`` appends copies of the first rows (the
    release's test pickle repeats 42 of its 6,761 triplets), one with other spacing and case."""
    rows = []
    for i in range(n):
        write_png(root / "images" / "test" / f"test_{i:04d}.jpg", 100 + i)
        rows.append({"image": f"test_{i:04d}", "question": f"what is present {i}?", "answer": ["yes", "fibrosis"][i % 2]})
    for k in range(repeats):
        row = dict(rows[k % n])
        if k == 0:
            row["question"] = "  " + row["question"].upper()
        rows.append(row)
    (root / "qas" / "test").mkdir(parents=True, exist_ok=True)
    with (root / "qas" / "test" / "test_qa.pkl").open("wb") as fh:
        pickle.dump(rows, fh)
    return root


def make_pmc_vqa_clean(root: Path, n: int = 3) -> Path:
    """``test_clean.csv`` with version 1's header (Answer = option text, Answer_label = letter) + ``images/``."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "test_clean.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"])
        options = ["Diffuse uptake", "Focal uptake", "No uptake", "Cannot determine"]
        for i in range(n):
            fig = f"PMC{100 + i}_F1.jpg"
            write_png(root / "images" / fig, 130 + i)
            letter = "ABCD"[(i + 1) % 4]
            w.writerow([fig, f"What is the uptake pattern {i}?", options["ABCD".index(letter)],
                        *(f"{k}:{o}" for k, o in zip("ABCD", options)), letter])
    return root


def make_pmc_vqa(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with (root / "test_2.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C", "Choice D",
                    "Answer", "split"])
        for i in range(n):
            fig = f"PMC{i}_fig1.jpg"
            write_png(root / "images" / fig, 30 + i)
            answer = ["A:CT ", "B:MRI", "C", "Ultrasound"][i % 4]
            w.writerow([i, fig, "caption", f"What modality is used {i}?", "A:CT ", "B:MRI", "C:X-ray ",
                        "D:Ultrasound", answer, "test"])
    return root


MMMU_SUBJECTS = ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine", "Pharmacy",
                 "Public_Health")


def make_mmmu(root: Path, per_subject: int = 2) -> Path:
    for s_i, subject in enumerate(MMMU_SUBJECTS):
        rows = []
        for i in range(per_subject):
            row = {"id": f"validation_{subject}_{i + 1}", "explanation": "", "img_type": "['Diagrams']",
                   "topic_difficulty": "Easy", "subfield": "Anatomy"}
            for n in range(1, 8):
                row[f"image_{n}"] = None
            if i % 2 == 0:  # two images, placed by <image N>
                row.update(question="Compare <image 1> with <image 2>. Which shows the lesion?",
                           options=str(["The first image", "The second image", "Both", "Neither"]),
                           answer="B", question_type="multiple-choice",
                           image_1={"bytes": png_bytes(20 + s_i), "path": "a.png"},
                           image_2={"bytes": png_bytes(200 - s_i), "path": "b.png"})
            else:
                row.update(question="<image 1> How many lesions are visible?", options="[]", answer="['2', 'two']",
                           question_type="open", image_1={"bytes": png_bytes(80 + s_i), "path": "c.png"})
            rows.append(row)
        write_parquet(root / subject / "validation-00000-of-00001.parquet", rows)
    return root


def make_omnimedvqa(root: Path, restricted: bool = False) -> Path:
    """``OmniMedVQA/QA_information/Open-access/ACRIMA.json`` + ``Images/``; ``restricted`` adds a
    ``Restricted-access/`` JSON whose images, as in the release, are not there (and one row that writes
    ``modality`` for ``modality_type``, as the release's ``Chest CT Scan.json`` does)."""
    base = root / "OmniMedVQA"
    rows = []
    for i, modality in enumerate(["CT(Computed Tomography)", "X-Ray", "CT(Computed Tomography)"]):
        rel = f"Images/ACRIMA/img{i}.png"
        write_png(base / rel, 70 + i)
        row = {"dataset": "ACRIMA", "question_id": f"ACRIMA_{i:04d}", "question_type": "Disease Diagnosis",
               "question": "What abnormality is shown?", "gt_answer": "Glaucoma", "image_path": rel,
               "option_A": "Normal", "option_B": "Glaucoma", "modality_type": modality}
        if i == 2:
            row.update(option_C="Cataract", option_D="Myopia")
        rows.append(row)
    (base / "QA_information" / "Open-access").mkdir(parents=True, exist_ok=True)
    (base / "QA_information" / "Open-access" / "ACRIMA.json").write_text(json.dumps(rows))
    if restricted:
        row = {"dataset": "Chest CT Scan", "question_id": "Chest CT Scan_0001", "question_type": "Modality Recognition",
               "question": "What imaging modality is this?", "gt_answer": "CT", "image_path": "Images/Chest CT Scan/a.png",
               "option_A": "MRI", "option_B": "CT", "option_C": "X-ray", "modality": "CT(Computed Tomography)"}
        (base / "QA_information" / "Restricted-access").mkdir(parents=True, exist_ok=True)
        (base / "QA_information" / "Restricted-access" / "Chest CT Scan.json").write_text(json.dumps([row]))
    return base


def make_demo_benchmarks(root: Path) -> Path:
    """A data root with all five Table 1 benchmarks (small) in their release layouts."""
    make_vqa_rad_original(root / "vqa_rad")
    make_slake(root)
    make_pathvqa_parquet(root / "pathvqa")
    make_pmc_vqa(root / "PMC-VQA")
    make_mmmu(root / "MMMU")
    return root
