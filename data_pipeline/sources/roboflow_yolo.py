"""Roboflow medical detection exports in YOLO form: ``data.yaml`` + ``<split>/images`` + ``<split>/labels``.

One input per image. ``data.yaml`` gives the class ``names`` (a list, or a dict id -> name) and the
split image folders (``train: ../train/images`` as Roboflow writes it, resolved against the root).
Each ``labels/<stem>.txt`` line is ``class cx cy w h`` normalised to 0-1; boxes are converted to
pixels with the image's size. A missing label file is ``no-annotation``; a bad line is
``bad-annotation`` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

from medsage.data_pipeline.sources.base import InputRejected, SourceItem, file_stamp, finite, inside_root
from medsage.images import DEFAULT_MAX_PIXELS, ImageTooLarge, open_image
from medsage.records import RoI

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _split_dir(root: Path, value: str) -> Path | None:
    """Roboflow writes ``../train/images`` for ``<root>/train/images``; a folder outside the root is refused."""
    top = root.resolve()
    for candidate in (root / value, root / value.lstrip("./")):
        if candidate.is_dir():
            if not candidate.resolve().is_relative_to(top):
                raise ValueError(f"{root / 'data.yaml'}: split folder {value!r} resolves to {candidate.resolve()}, "
                                 f"outside the source root {top}")
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
        self.labels = [str(n) for n in names]
        self.max_pixels = DEFAULT_MAX_PIXELS  # the run sets its quality.max_pixels
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
        rois, labels = [], []
        for lineno, parts in lines:
            try:
                cls = int(parts[0])
                if len(parts) != 5 or not 0 <= cls < len(self.labels):
                    raise ValueError
            except (ValueError, IndexError):
                raise InputRejected("bad-annotation",
                                    f"{label_file}:{lineno}: expected `class cx cy w h` with class in "
                                    f"0..{len(self.labels) - 1}, got {' '.join(parts)!r}") from None
            cx, cy, w, h = finite(parts[1:5], f"{label_file}:{lineno}")
            if w <= 0 or h <= 0:
                raise InputRejected("degenerate-box", f"{label_file}:{lineno}: width/height {w} {h}")
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            rois.append(RoI("box", box=box, label=self.labels[cls]))
            labels.append(self.labels[cls])
        return SourceItem(key=key, images=[str(image.resolve())], labels=labels, rois=rois, modality=self.modality,
                          metadata={"split": image.parent.parent.name, "file_name": image.name})
