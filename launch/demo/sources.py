"""Generated sources in their real download layouts (no network, no real patient data).

Used by the tests and by the demo (`medsage data demo-sources OUT`).

- DeepLesion: ``DL_info.csv`` with the real file's columns and ``Images_png/<patient>_<study>_<series>/<slice>.png``
  16-bit slices (value = HU + 32768): air, a soft-tissue body, one bright lesion in the row's box.
- Roboflow COCO: ``<split>/_annotations.coco.json`` beside the images, with Roboflow's placeholder category.
- Roboflow YOLO: ``data.yaml`` (``train: ../train/images``) + ``<split>/images`` + ``<split>/labels``.
- PubMedVision: a JSON list of ``image`` + ``conversations`` items with images under ``images/``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DL_COLUMNS = ["File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
              "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
              "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
              "Patient_age", "Train_Val_Test"]


def textured(seed: int, size: int = 128, boxes: list[tuple[int, int, int, int]] = ()) -> np.ndarray:
    """An 8-bit CT-like picture: a body outline, a few organs of random grey, bright findings in ``boxes``."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse([6, 16, size - 6, size - 16], fill=int(rng.integers(60, 100)))
    for _ in range(int(rng.integers(4, 8))):
        cx, cy = rng.integers(size // 5, size - size // 5, 2)
        rx, ry = rng.integers(size // 20, size // 5, 2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.integers(20, 200)))
    for box in boxes:
        draw.ellipse(list(box), fill=250)
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) + rng.normal(0, 5, (size, size))
    return np.clip(arr, 0, 255).astype(np.uint8)


def make_deeplesion(root: Path, n: int = 8, size: int = 128, defects: bool = False) -> Path:
    """``n`` lesion rows (types cycle 1..8), several rows sharing a slice; ``defects`` adds bad rows."""
    rows = []
    (root / "Images_png").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        patient, study, series, slc = 1 + i // 3, 1, 1, 100 + i
        folder = root / "Images_png" / f"{patient:06d}_{study:02d}_{series:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        x1, y1 = 20 + (i * 7) % 60, 30 + (i * 11) % 50
        box = (x1, y1, x1 + 18, y1 + 14)
        # HU: air -1000, body ~ 0..60, lesion ~ 200 (bright in the soft-tissue window).
        pic = textured(1000 + i, size, [box]).astype(np.float32)
        hu = np.where(pic < 15, -1000.0, pic - 60.0)
        hu[box[1]:box[3], box[0]:box[2]] = 200.0
        Image.fromarray((hu + 32768).astype(np.uint16)).save(folder / f"{slc:03d}.png")
        rows.append(_dl_row(f"{patient:06d}_{study:02d}_{series:02d}_{slc:03d}.png", patient, study, box,
                            lesion_type=(i % 8) + 1, size=size, split=1 + i % 3))
    if defects:
        folder = root / "Images_png" / "000900_01_01"
        folder.mkdir(parents=True, exist_ok=True)
        rows.append(_dl_row("000900_01_01_001.png", 900, 1, (10, 10, 30, 30), 4, size))  # file missing
        good = np.full((size, size), 32768 + 40, dtype=np.uint16)
        good[::2] += 30
        Image.fromarray(good).save(folder / "002.png")
        data = (folder / "002.png").read_bytes()
        (folder / "003.png").write_bytes(data[: len(data) // 2])  # truncated
        rows.append(_dl_row("000900_01_01_003.png", 900, 1, (10, 10, 30, 30), 4, size))
        Image.fromarray(np.full((size, size), 32768 + 40, dtype=np.uint16)).save(folder / "004.png")  # flat
        rows.append(_dl_row("000900_01_01_004.png", 900, 1, (10, 10, 30, 30), 4, size))
        rows.append(_dl_row("000900_01_01_002.png", 900, 1, (100, 100, 180, 150), 4, size))  # box outside
        rows.append(_dl_row("000900_01_01_002.png", 900, 1, (40, 40, 41, 60), 4, size))  # 1-px wide box
        bad = _dl_row("000900_01_01_002.png", 900, 1, (10, 10, 30, 30), 4, size)
        bad["Bounding_boxes"] = "10, 10, 30"  # three numbers
        rows.append(bad)
        rows.append(_dl_row("000900_01_01_002.png", 900, 1, (12, 14, 40, 44), -1, size))  # unknown type: kept
    with (root / "DL_info.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, DL_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def _dl_row(name: str, patient: int, study: int, box, lesion_type: int, size: int, split: int = 1) -> dict:
    x1, y1, x2, y2 = box
    return {
        "File_name": name, "Patient_index": patient, "Study_index": study, "Series_ID": 1,
        "Key_slice_index": int(name.split("_")[-1][:-4]),
        "Measurement_coordinates": f"{x1}, {y1}, {x2}, {y2}, {x1}, {y2}, {x2}, {y1}",
        "Bounding_boxes": f"{x1:.3f}, {y1:.3f}, {x2:.3f}, {y2:.3f}", "Lesion_diameters_Pixel_": f"{x2 - x1}, {y2 - y1}",
        "Normalized_lesion_location": "0.5, 0.5, 0.5", "Coarse_lesion_type": lesion_type, "Possibly_noisy": 0,
        "Slice_range": "95, 105", "Spacing_mm_px_": "0.8, 0.8, 5", "Image_size": f"{size}, {size}",
        "DICOM_windows": "-175, 275", "Patient_gender": "F", "Patient_age": 61, "Train_Val_Test": split,
    }


COCO_CLASSES = ["glioma", "meningioma", "pituitary"]


def make_roboflow_coco(root: Path, per_split: int = 4, size: int = 96) -> Path:
    """A Roboflow COCO export: train/ and valid/, a placeholder category, one image without annotations."""
    categories = [{"id": 0, "name": "brain-tumors", "supercategory": "none"}] + [
        {"id": i + 1, "name": c, "supercategory": "brain-tumors"} for i, c in enumerate(COCO_CLASSES)]
    for s, split in enumerate(["train", "valid"]):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(per_split):
            x, y = 10 + 9 * i, 20 + 5 * i
            name = f"scan_{split}_{i}_jpg.rf.{i:04x}.jpg"
            Image.fromarray(textured(2000 + 10 * s + i, size, [(x, y, x + 20, y + 16)])).convert("RGB").save(
                folder / name, quality=95)
            images.append({"id": i, "file_name": name, "width": size, "height": size})
            if i < per_split - 1 or s == 1:  # the last train image has no annotation
                anns.append({"id": len(anns), "image_id": i, "category_id": 1 + (i + s) % 3,
                             "bbox": [x, y, 20, 16], "area": 320, "iscrowd": 0})
        coco = {"info": {}, "licenses": [], "categories": categories, "images": images, "annotations": anns}
        (folder / "_annotations.coco.json").write_text(json.dumps(coco))
    return root


YOLO_CLASSES = ["fracture", "implant"]


def make_roboflow_yolo(root: Path, per_split: int = 3, size: int = 100, polygons: bool = False,
                       placeholder: bool = False) -> Path:
    """A Roboflow YOLO export with one bad label line and one image without a label file.

    ``polygons`` writes every odd train image's label as a polygon (a segmentation export's line
    ``class x1 y1 ... xn yn`` around the same box); ``placeholder`` puts the dataset's own name first
    in ``names``, a class no line uses, as Roboflow exports do."""
    root.mkdir(parents=True, exist_ok=True)
    names = ["xray-dataset", *YOLO_CLASSES] if placeholder else YOLO_CLASSES
    offset = 1 if placeholder else 0
    (root / "data.yaml").write_text(
        f"train: ../train/images\nval: ../valid/images\n\nnc: {len(names)}\nnames: {names!r}\n")
    for s, split in enumerate(["train", "valid"]):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(per_split):
            x, y = 15 + 10 * i, 25 + 6 * i
            name = f"xray_{split}_{i}"
            Image.fromarray(textured(3000 + 10 * s + i, size, [(x, y, x + 30, y + 20)])).save(
                root / split / "images" / f"{name}.png")
            if split == "valid" and i == per_split - 1:
                continue  # no label file
            cls = (i + s) % 2 + offset
            line = f"{cls} {(x + 15) / size:.6f} {(y + 10) / size:.6f} {30 / size:.6f} {20 / size:.6f}\n"
            if polygons and split == "train" and i % 2 == 1:  # a diamond touching the box's four sides
                pts = [(x + 15, y), (x + 30, y + 10), (x + 15, y + 20), (x, y + 10)]
                line = f"{cls} " + " ".join(f"{px / size:.6f} {py / size:.6f}" for px, py in pts) + "\n"
            if split == "valid" and i == 0:
                line = "7 0.5 0.5 0.2 0.2\n"  # class out of range
            (root / split / "labels" / f"{name}.txt").write_text(line)
    return root


def make_pubmedvision(root: Path, n: int = 4, size: int = 90, instruction: bool = False) -> Path:
    """A PubMedVision JSON with localisation cues in the text and one item whose image is missing.

    ``instruction`` also writes ``PubMedVision_InstructionTuning_VQA.json`` (same fields, the same ids
    and images, a question asked about each image) as the release ships both files."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    texts = [
        ("What does the chest CT show?", "A mass in the right lower lobe (white arrow) with pleural thickening."),
        ("Describe the finding.", "There is a cyst in the upper pole of the left kidney, marked by arrowheads."),
        ("What is seen on this MRI?", "No focal abnormality is visible."),
        ("What is abnormal?", "Fracture of the left femur."),
    ]
    items = []
    for i in range(n):
        path = f"images/pmc_{i}.jpg"
        if i != n - 1:
            Image.fromarray(textured(4000 + i, size)).convert("RGB").save(root / path)
        q, a = texts[i % len(texts)]
        items.append({"id": f"pmc{i}", "image": [path], "modality": "Computed Tomography", "body_part": "Chest",
                      "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]})
    (root / "PubMedVision_Alignment_VQA.json").write_text(json.dumps(items, indent=1))
    if instruction:
        asked = [{**item, "conversations": [{"from": "human", "value": f"<image>\nWhich body part is shown? ({k})"},
                                            {"from": "gpt", "value": "The chest, with a mass in the right lung."}]}
                 for k, item in enumerate(items)]
        (root / "PubMedVision_InstructionTuning_VQA.json").write_text(json.dumps(asked, indent=1))
    return root


MAKERS = {"deeplesion": make_deeplesion, "roboflow_coco": make_roboflow_coco, "roboflow_yolo": make_roboflow_yolo,
          "pubmedvision": make_pubmedvision}


def make_demo_sources(root: Path, defects: bool = True) -> dict[str, Path]:
    """One generated copy of each source under ``root``; ``defects`` adds DeepLesion rows the filter rejects."""
    return {
        "deeplesion": make_deeplesion(root / "DeepLesion", n=12, defects=defects),
        "roboflow_coco": make_roboflow_coco(root / "roboflow_coco", per_split=6),
        "roboflow_yolo": make_roboflow_yolo(root / "roboflow_yolo", per_split=4),
        "pubmedvision": make_pubmedvision(root / "PubMedVision", n=6),
    }
