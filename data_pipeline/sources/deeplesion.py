"""DeepLesion (NIH), read as downloaded: ``DL_info.csv`` + ``Images_png/<patient>_<study>_<series>/<slice>.png``.

One input per CSV row (one lesion). ``File_name`` is ``<patient>_<study>_<series>_<slice>.png``; the
key slice is a 16-bit PNG whose value − 32768 is the Hounsfield unit. The row's ``DICOM_windows``
("min, max" in HU) maps it to 8 bits; a missing or bad window falls back to a per-lesion-type default
(lung window for lung lesions, bone window for bone, soft tissue otherwise). The 8-bit slice is written
once under ``image_dir/deeplesion/`` (atomically; rows sharing a slice reuse it). The box is
``Bounding_boxes`` (x1, y1, x2, y2 in pixels), the label ``Coarse_lesion_type``; ``Possibly_noisy`` and
``Train_Val_Test`` (1 train, 2 val, 3 test) are kept as metadata. Unknown type (−1) gets only the
closed question "is there a lesion", since there is no label to ask about.

The full release's ``DL_info.csv`` has 32,735 rows (one per lesion) and 18 columns, read by name:
File_name, Patient_index, Study_index, Series_ID, Key_slice_index, Measurement_coordinates,
Bounding_boxes, Lesion_diameters_Pixel_, Normalized_lesion_location, Coarse_lesion_type,
Possibly_noisy, Slice_range, Spacing_mm_px_, Image_size, DICOM_windows, Patient_gender, Patient_age,
Train_Val_Test. Lists inside a cell are ", "-separated. The coarse type is labelled only for the
val and test lesions; train rows carry -1. ``splits`` (e.g. ``[train]``) keeps only the rows of
those ``Train_Val_Test`` splits as inputs; ``split_counts`` and ``rows_in_file`` report what the file held.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from medsage.data_pipeline.sources.base import InputRejected, SourceItem
from medsage.records import RoI

COARSE_TYPES = {1: "bone", 2: "abdomen", 3: "mediastinum", 4: "liver", 5: "lung", 6: "kidney",
                7: "soft tissue", 8: "pelvis"}
SPLITS = {1: "train", 2: "val", 3: "test"}
HU_OFFSET = 32768
# Default windows (HU) when a row has none: the usual lung, bone and soft-tissue CT windows.
DEFAULT_WINDOWS = {"lung": (-1350.0, 150.0), "bone": (-450.0, 1050.0)}
SOFT_TISSUE_WINDOW = (-175.0, 275.0)
REQUIRED_COLUMNS = ("File_name", "Bounding_boxes", "Coarse_lesion_type", "DICOM_windows", "Possibly_noisy",
                    "Train_Val_Test", "Image_size")


def _floats(text: str, n: int, column: str) -> list[float]:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise InputRejected("bad-annotation", f"{column} {text!r} is not a list of numbers") from None
    if len(values) != n:
        raise InputRejected("bad-annotation", f"{column} {text!r} needs {n} numbers")
    return values


def _int_or_none(text) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def window_to_uint8(hu, low: float, high: float):
    """Clip HU values to the window and scale to 0-255."""
    import numpy as np

    scaled = (np.clip(hu, low, high) - low) / (high - low) * 255.0
    return np.round(scaled).astype(np.uint8)


class DeepLesionSource:
    """``root`` holds ``DL_info.csv`` and ``Images_png/``."""

    name = "deeplesion"
    labels = list(COARSE_TYPES.values())
    modality = "CT"
    templates = {"closed": "Is there a lesion in the {label} on this CT slice?",
                 "which": "Which body region does the lesion on this CT slice belong to?"}

    def __init__(self, root: str | Path, image_dir: str | Path, csv_name: str = "DL_info.csv",
                 splits: list[str] | None = None):
        self.root = Path(root)
        self.csv_path = self.root / csv_name
        self.image_dir = Path(image_dir) / self.name
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"DeepLesion: {self.csv_path} not found (expected DL_info.csv under {self.root})")
        with self.csv_path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{self.csv_path}: missing column(s) {missing}; found {reader.fieldnames}")
            # Row numbers are file lines (header is line 1), so a rejection names the line to look at.
            rows = {f"row{line:06d}": row for line, row in enumerate(reader, start=2)}
        self.rows_in_file = len(rows)
        split_of = {k: SPLITS.get(_int_or_none(r.get("Train_Val_Test")), str(r.get("Train_Val_Test")))
                    for k, r in rows.items()}
        self.split_counts = dict(sorted(Counter(split_of.values()).items()))
        if splits:
            unknown = set(splits) - set(SPLITS.values())
            if unknown:
                raise ValueError(f"{self.csv_path}: splits {sorted(unknown)} are not among {list(SPLITS.values())}")
            rows = {k: r for k, r in rows.items() if split_of[k] in splits}
        self.rows = rows

    def inputs(self) -> list[str]:
        return list(self.rows)

    def load(self, key: str) -> SourceItem:
        row = self.rows[key]
        where = f"{self.csv_path.name} line {int(key[3:])}"
        name = row["File_name"].strip()
        parts = name[:-4].split("_") if name.endswith(".png") else []
        if len(parts) != 4:
            raise InputRejected("bad-annotation",
                                f"{where}: File_name {name!r} is not <patient>_<study>_<series>_<slice>.png")
        png = self.root / "Images_png" / "_".join(parts[:3]) / f"{parts[3]}.png"
        try:
            lesion_type = int(float(row["Coarse_lesion_type"]))
        except ValueError:
            raise InputRejected("bad-annotation",
                                f"{where}: Coarse_lesion_type {row['Coarse_lesion_type']!r}") from None
        label = COARSE_TYPES.get(lesion_type)
        x1, y1, x2, y2 = _floats(row["Bounding_boxes"], 4, f"{where}: Bounding_boxes")
        if x2 <= x1 or y2 <= y1:
            raise InputRejected("degenerate-box", f"{where}: Bounding_boxes {row['Bounding_boxes']!r}")
        out = self.image_dir / f"{name}"
        if not out.exists():
            self._convert(png, out, self._window(row, label, where))
        try:
            split = SPLITS.get(int(float(row["Train_Val_Test"])), row["Train_Val_Test"])
        except ValueError:
            split = row["Train_Val_Test"]
        metadata = {"file_name": name, "lesion_type": lesion_type, "split": split, "csv_line": int(key[3:]),
                    "possibly_noisy": row["Possibly_noisy"].strip() == "1"}
        for column, field_name in (("Patient_gender", "gender"), ("Patient_age", "age"),
                                   ("Normalized_lesion_location", "normalized_location")):
            if row.get(column, "").strip():
                metadata[field_name] = row[column].strip()
        return SourceItem(
            key=key, images=[str(out.resolve())], labels=[label] if label else [],
            rois=[RoI("box", box=(x1, y1, x2, y2), label=label or "lesion")], modality=self.modality,
            metadata=metadata,
            # No label: the only honest question is whether a lesion is there at all.
            **({} if label else {"question": "Is there a lesion visible on this CT slice?", "answer": "yes",
                                   "question_type": "closed"}),
        )

    @staticmethod
    def _window(row: dict, label: str | None, where: str) -> tuple[float, float]:
        try:
            low, high = _floats(row["DICOM_windows"], 2, f"{where}: DICOM_windows")
            if high > low:
                return low, high
        except InputRejected:
            pass
        return DEFAULT_WINDOWS.get(label or "", SOFT_TISSUE_WINDOW)

    @staticmethod
    def _convert(png: Path, out: Path, window: tuple[float, float]) -> None:
        import io

        import numpy as np
        from PIL import Image

        from medsage.io import atomic_write_bytes

        try:
            with Image.open(png) as img:
                img.load()
                raw = np.asarray(img).astype(np.int32)
        except (OSError, ValueError, SyntaxError) as err:
            raise InputRejected("unreadable-image", f"{png}: {type(err).__name__}: {err}") from None
        if raw.ndim != 2 or raw.max(initial=0) < 256:  # an 8-bit export would decode as nonsense HU
            raise InputRejected("unreadable-image", f"{png}: not a 16-bit single-channel DeepLesion slice")
        buf = io.BytesIO()
        Image.fromarray(window_to_uint8(raw - HU_OFFSET, *window)).save(buf, format="PNG")
        atomic_write_bytes(out, buf.getvalue())
