"""Roboflow medical detection exports in YOLO form: ``data.yaml`` + ``<split>/images`` + ``<split>/labels``.

One input per image. ``data.yaml`` gives the class ``names`` (a list, or a dict id -> name) and the
split image folders (``train: ../train/images`` as Roboflow writes it, resolved against the root).
Each ``labels/<stem>.txt`` line is ``class cx cy w h`` normalised to 0-1; boxes are converted to
pixels with the image's size. A missing label file is ``no-annotation``; a bad line is
``bad-annotation`` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

from medsage.data_pipeline.sources.base import InputRejected, SourceItem
from medsage.records import RoI

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _split_dir(root: Path, value: str) -> Path | None:
    """Roboflow writes ``../train/images``; Ultralytics would read it relative to the yaml's parent."""
    for candidate in (root / value, root / value.lstrip("./"), root.parent / value.lstrip("./")):
        if candidate.is_dir():
            return candidate
    return None


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
            spec = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise FileNotFoundError(f"Roboflow YOLO: cannot read {data_yaml}: {err}") from None
        names = spec.get("names") if isinstance(spec, dict) else None
        if isinstance(names, dict):
            names = [names[k] for k in sorted(names)]
        if not isinstance(names, list) or not names:
            raise ValueError(f"{data_yaml}: needs a non-empty `names` list")
        self.labels = [str(n) for n in names]
        self.files: dict[str, tuple[Path, Path]] = {}
        for split in ("train", "val", "test"):
            if not spec.get(split):
                continue
            images = _split_dir(self.root, str(spec[split]))
            if images is None:
                raise FileNotFoundError(f"{data_yaml}: {split} folder {spec[split]!r} not found under {self.root}")
            labels = images.parent / "labels"
            for image in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                self.files[f"{images.parent.name}/{image.name}"] = (image, labels / f"{image.stem}.txt")

    def inputs(self) -> list[str]:
        return list(self.files)

    def load(self, key: str) -> SourceItem:
        from PIL import Image

        image, label_file = self.files[key]
        if not label_file.is_file():
            raise InputRejected("no-annotation", f"{label_file} not found")
        lines = [(n, line.split()) for n, line in enumerate(label_file.read_text().splitlines(), 1) if line.strip()]
        if not lines:
            raise InputRejected("no-annotation", f"{label_file} is empty")
        try:
            with Image.open(image) as img:
                width, height = img.size
        except (OSError, ValueError, SyntaxError) as err:
            raise InputRejected("unreadable-image", f"{image}: {type(err).__name__}: {err}") from None
        rois, labels = [], []
        for lineno, parts in lines:
            try:
                cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                if len(parts) != 5 or not 0 <= cls < len(self.labels):
                    raise ValueError
            except (ValueError, IndexError):
                raise InputRejected("bad-annotation",
                                    f"{label_file}:{lineno}: expected `class cx cy w h` with class in "
                                    f"0..{len(self.labels) - 1}, got {' '.join(parts)!r}") from None
            if w <= 0 or h <= 0:
                raise InputRejected("degenerate-box", f"{label_file}:{lineno}: width/height {w} {h}")
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            rois.append(RoI("box", box=box, label=self.labels[cls]))
            labels.append(self.labels[cls])
        return SourceItem(key=key, images=[str(image.resolve())], labels=labels, rois=rois, modality=self.modality,
                          metadata={"split": image.parent.parent.name, "file_name": image.name})
