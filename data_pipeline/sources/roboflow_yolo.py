"""Roboflow medical detection exports in YOLO form: ``data.yaml`` + ``<split>/images`` + ``<split>/labels``.

One input per image. ``data.yaml`` gives the class ``names`` (a list, or a dict id -> name) and the
split image folders. Roboflow writes ``train: ../train/images``; the folder is looked up inside the
export (``<root>/train/images``), never in the export's parent, and a path that leaves the export is
an error.

Each ``labels/<stem>.txt`` line is either a box ``class cx cy w h`` or a polygon ``class x1 y1 x2 y2
... xn yn`` (segmentation exports; three points or more), all normalised to 0-1. A polygon becomes
the box of its points' extremes, clipped to the image, as the YOLO tools do (Ultralytics'
``segments2boxes``). Boxes are converted to pixels with the image's size. A missing label file is
``no-annotation``; a bad line is ``bad-annotation`` naming the file and line.

Classes: a class no label line uses (Roboflow's placeholders: the dataset's own name, a class kept
for another annotation type) is left out of ``labels``, so it is never asked about nor used as a
distractor; ``dropped_classes`` lists them. Distractors come from the export's class list.
"""

from __future__ import annotations

import math
from pathlib import Path

from medsage.data_pipeline.sources.base import InputRejected, SourceItem, file_stamp, inside_root
from medsage.images import DEFAULT_MAX_PIXELS, ImageTooLarge, open_image
from medsage.records import RoI

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _split_dir(root: Path, value: str, data_yaml: Path) -> Path | None:
    """The split folder inside ``root``: ``../train/images`` and ``./train/images`` mean ``root/train/images``.

    A folder that only exists outside the root (an absolute path, or ``..`` leading out) is refused."""
    top = root.resolve()
    rel = value.replace("\\", "/")
    while rel.startswith(("../", "./")):
        rel = rel[3:] if rel.startswith("../") else rel[2:]
    for candidate in (root / rel, root / value):
        if candidate.is_dir():
            if not candidate.resolve().is_relative_to(top):
                raise ValueError(f"{data_yaml}: split folder {value!r} resolves to {candidate.resolve()}, outside "
                                 f"the source root {top} (looked for {root / rel}); move it inside or fix data.yaml")
            return candidate
    return None


def parse_label_line(parts: list[str], n_classes: int) -> tuple[int, tuple[float, float, float, float], str]:
    """``(class, (cx, cy, w, h) normalised, "box" | "polygon")``; ValueError for anything else."""
    cls = int(parts[0])
    values = [float(v) for v in parts[1:]]
    if not 0 <= cls < n_classes or not all(math.isfinite(v) for v in values):  # NaN would pass every comparison
        raise ValueError
    if len(values) == 4:
        return cls, tuple(values), "box"  # type: ignore[return-value]
    if len(values) >= 6 and len(values) % 2 == 0:
        xs = [min(max(v, 0.0), 1.0) for v in values[0::2]]
        ys = [min(max(v, 0.0), 1.0) for v in values[1::2]]
        x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
        return cls, ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), "polygon"
    raise ValueError


class RoboflowYoloSource:
    """``root`` holds ``data.yaml`` and the split folders."""

    name = "roboflow_yolo"
    modality = None
    templates = {"closed": "Does this image show {label}?", "which": "Which finding is marked in this image?"}

    def __init__(self, root: str | Path, image_dir: str | Path, modality: str | None = None,
                 name: str | None = None):
        import yaml

        self.root = Path(root)
        self.modality = modality
        if name:
            self.name = name
        data_yaml = self.root / "data.yaml"
        try:
            spec = yaml.safe_load(data_yaml.read_bytes().decode("utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
            raise FileNotFoundError(f"Roboflow YOLO: cannot read {data_yaml}: {err}") from None
        names = spec.get("names") if isinstance(spec, dict) else None
        if isinstance(names, dict):
            try:
                names = [names[k] for k in sorted(names)]
            except TypeError:
                raise ValueError(f"{data_yaml}: `names` keys must all be class ids") from None
        if not isinstance(names, list) or not names:
            raise ValueError(f"{data_yaml}: needs a non-empty `names` list")
        self.classes = [str(n) for n in names]  # the export's class list, ids as data.yaml numbers them
        self.max_pixels = DEFAULT_MAX_PIXELS  # the run sets its quality.max_pixels
        self.files: dict[str, tuple[Path, Path]] = {}
        for split in ("train", "val", "test"):
            if not spec.get(split):
                continue
            images = _split_dir(self.root, str(spec[split]), data_yaml)
            if images is None:
                raise FileNotFoundError(f"{data_yaml}: {split} folder {spec[split]!r} not found under {self.root}")
            labels = images.parent / "labels"
            for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                self.files[f"{images.parent.name}/{image.name}"] = (image, labels / f"{image.stem}.txt")
        used = self._classes_in_use()
        self.labels = [c for i, c in enumerate(self.classes) if i in used]
        self.dropped_classes = [c for i, c in enumerate(self.classes) if i not in used]

    def _classes_in_use(self) -> set[int]:
        """Class ids that at least one readable label line (box or polygon) uses."""
        used: set[int] = set()
        for _, label_file in self.files.values():
            if not label_file.is_file():
                continue
            for line in label_file.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    used.add(parse_label_line(line.split(), len(self.classes))[0])
                except (ValueError, IndexError):
                    continue  # reported as bad-annotation when the image is loaded
        return used

    def inputs(self) -> list[str]:
        return list(self.files)

    def stamp(self, key: str):
        image, label_file = self.files[key]
        return [file_stamp(image), file_stamp(label_file)]

    def load(self, key: str) -> SourceItem:
        image, label_file = self.files[key]
        image = inside_root(self.root, str(image), f"{key}")
        if not label_file.is_file():
            raise InputRejected("no-annotation", f"{label_file} not found")
        inside_root(self.root, str(label_file), f"{key} label file")
        raw = label_file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[:err.start].count(b"\n") + 1
            raise InputRejected("bad-encoding", f"{label_file}:{line}: not UTF-8 (byte {err.start})") from None
        lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if not lines:
            raise InputRejected("no-annotation", f"{label_file} is empty")
        try:
            with open_image(image, self.max_pixels) as img:
                width, height = img.size
        except ImageTooLarge as err:
            raise InputRejected("too-large", str(err)) from None
        except (OSError, ValueError, SyntaxError) as err:
            raise InputRejected("unreadable-image", f"{image}: {type(err).__name__}: {err}") from None
        rois, labels, polygons = [], [], 0
        for lineno, parts in lines:
            try:
                cls, (cx, cy, w, h), shape = parse_label_line(parts, len(self.classes))
            except (ValueError, IndexError):
                raise InputRejected("bad-annotation",
                                    f"{label_file}:{lineno}: expected `class cx cy w h` or a polygon "
                                    f"`class x1 y1 ... xn yn` (3+ points) with class in 0..{len(self.classes) - 1}, "
                                    f"got {' '.join(parts)!r}") from None
            if w <= 0 or h <= 0:
                raise InputRejected("degenerate-box", f"{label_file}:{lineno}: width/height {w} {h}")
            polygons += shape == "polygon"
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            rois.append(RoI("box", box=box, label=self.classes[cls]))
            labels.append(self.classes[cls])
        return SourceItem(key=key, images=[str(image.resolve())], labels=labels, rois=rois, modality=self.modality,
                          metadata={"split": image.parent.parent.name, "file_name": image.name,
                                    **({"polygons_as_boxes": polygons} if polygons else {})})
