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
import re
from collections import Counter
from pathlib import Path

from medsage.data_pipeline.sources.base import (InputRejected, SourceItem, file_stamp, finite, inside_out,
                                                inside_root)
from medsage.images import DEFAULT_MAX_PIXELS, ImageTooLarge, open_image
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


# <patient>_<study>_<series>_<slice>.png, one plain file name: no folder part can lead outside the root.
_FILE_NAME = re.compile(r"([0-9A-Za-z-]+)_([0-9A-Za-z-]+)_([0-9A-Za-z-]+)_([0-9A-Za-z-]+)\.png")


def _floats(text: str, n: int, column: str) -> list[float]:
    values = finite(str(text).split(","), f"{column} {text!r}")
    if len(values) != n:
        raise InputRejected("bad-annotation", f"{column} {text!r} needs {n} numbers")
    return values


def _int_or_none(text) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError, OverflowError):  # a hostile cell ("inf") is no split, not a crash
        return None


def _integer(text: str, where: str) -> int:
    (value,) = finite([text], where)  # "inf" and "nan" are rejected here, not crashed on by int()
    if value != int(value):
        raise InputRejected("bad-annotation", f"{where}: {text!r} is not an integer")
    return int(value)


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
        self.max_pixels = DEFAULT_MAX_PIXELS  # the run sets its quality.max_pixels
        self._converted: set[Path] = set()
        # Bytes that are not UTF-8 are kept as surrogates, so the one bad row is rejected, not the file.
        with self.csv_path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            self.rows, line = {}, 2
            try:
                reader = csv.DictReader(fh)
                missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ValueError(f"{self.csv_path}: missing column(s) {missing}; found {reader.fieldnames}")
                # Keys are the file line a row starts on (header is line 1): a rejection names the line to look at.
                for row in reader:
                    self.rows[f"row{line:06d}"] = row
                    line = reader.line_num + 1
            except csv.Error as err:  # e.g. a field over the csv module's size limit: the file cannot be read on
                raise ValueError(f"{self.csv_path} line {line}: cannot be parsed as CSV ({err})") from None
        self.rows_in_file = len(self.rows)
        split_of = {k: SPLITS.get(_int_or_none(r.get("Train_Val_Test")), str(r.get("Train_Val_Test")))
                    for k, r in self.rows.items()}
        self.split_counts = dict(sorted(Counter(split_of.values()).items()))
        if splits:
            unknown = set(splits) - set(SPLITS.values())
            if unknown:
                raise ValueError(f"{self.csv_path}: splits {sorted(unknown)} are not among {list(SPLITS.values())}")
            self.rows = {k: r for k, r in self.rows.items() if split_of[k] in splits}

    def inputs(self) -> list[str]:
        return list(self.rows)

    def stamp(self, key: str):
        row = self.rows[key]
        m = _FILE_NAME.fullmatch(str(row.get("File_name") or "").strip())
        png = self.root / "Images_png" / "_".join(m.groups()[:3]) / f"{m.group(4)}.png" if m else None
        return [sorted((str(k), str(v)) for k, v in row.items()), file_stamp(png) if png else None]

    def load(self, key: str) -> SourceItem:
        row = self.rows[key]
        where = f"{self.csv_path} line {int(key[3:])}"
        if None in row.values():  # DictReader's mark of a short row
            raise InputRejected("bad-row", f"{where}: fewer fields than the header's {len(row) - (None in row)}")
        if None in row:  # and of a long one (an unquoted comma shifts every later column)
            raise InputRejected("bad-row", f"{where}: {len(row[None])} field(s) more than the header")
        bad = next((c for c, v in row.items() if any("\udc80" <= ch <= "\udcff" for ch in v)), None)
        if bad is not None:
            raise InputRejected("bad-encoding", f"{where}: column {bad} is not UTF-8 text")
        name = row["File_name"].strip()
        m = _FILE_NAME.fullmatch(name)
        if not m:
            raise InputRejected("bad-annotation",
                                f"{where}: File_name {name!r} is not <patient>_<study>_<series>_<slice>.png")
        png = inside_root(self.root, f"Images_png/{'_'.join(m.groups()[:3])}/{m.group(4)}.png", where)
        lesion_type = _integer(row["Coarse_lesion_type"], f"{where}: Coarse_lesion_type")
        label = COARSE_TYPES.get(lesion_type)
        x1, y1, x2, y2 = _floats(row["Bounding_boxes"], 4, f"{where}: Bounding_boxes")
        if x2 <= x1 or y2 <= y1:
            raise InputRejected("degenerate-box", f"{where}: Bounding_boxes {row['Bounding_boxes']!r}")
        out = inside_out(self.image_dir, self.image_dir / name)
        if out not in self._converted:  # converted once per run (rows share slices); a rerun sees a changed PNG
            self._convert(png, out, self._window(row, label, where), self.max_pixels)
            self._converted.add(out)
        try:
            split = SPLITS.get(_integer(row["Train_Val_Test"], where), row["Train_Val_Test"])
        except InputRejected:
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
    def _convert(png: Path, out: Path, window: tuple[float, float], max_pixels: int) -> None:
        import io

        import numpy as np
        from PIL import Image

        from medsage.io import write_if_changed

        try:
            with open_image(png, max_pixels) as img:
                img.load()
                raw = np.asarray(img).astype(np.int32)
        except ImageTooLarge as err:
            raise InputRejected("too-large", str(err)) from None
        except (OSError, ValueError, SyntaxError) as err:
            raise InputRejected("unreadable-image", f"{png}: {type(err).__name__}: {err}") from None
        if raw.ndim != 2 or raw.max(initial=0) < 256:  # an 8-bit export would decode as nonsense HU
            raise InputRejected("unreadable-image", f"{png}: not a 16-bit single-channel DeepLesion slice")
        buf = io.BytesIO()
        Image.fromarray(window_to_uint8(raw - HU_OFFSET, *window)).save(buf, format="PNG")
        write_if_changed(out, buf.getvalue())
