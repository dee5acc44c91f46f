"""Roboflow medical detection exports in COCO form: ``<split>/_annotations.coco.json`` beside the images.

One input per image. Boxes are COCO ``bbox`` ``[x, y, width, height]`` in pixels. Roboflow adds a
placeholder category named after the project (supercategory ``"none"``) that every real class points
to as its supercategory; it is not a label and is left out of the label set, as is any category no
annotation uses (``dropped_classes`` lists both), so neither is asked about nor used as a distractor.
An image without annotations has nothing to ask about and is rejected as ``no-annotation``, unless
``keep_empty`` is set: then it is a negative image, an item with no labels and no RoIs (what the
box-derived question kinds of ``data_pipeline/questions.py`` ask "is there a lesion?" about).

Every image entry is one input. An entry without a usable ``file_name`` or ``id`` is rejected. Two
entries with one ``file_name`` in a split are one picture: the later entry's annotations are merged
into the first and the later entry is rejected as ``duplicate-entry`` naming where it went (when
their sizes disagree it is rejected as ``conflicting-duplicate`` and nothing is merged).
"""

from __future__ import annotations

import json
from pathlib import Path

from medsage.data_pipeline.sources.base import (InputRejected, SourceItem, file_stamp, finite, inside_root,
                                                read_annotation_json)
from medsage.records import RoI

ANNOTATION_FILE = "_annotations.coco.json"


class RoboflowCocoSource:
    """``root`` holds one folder per split (train/valid/test), each with ``_annotations.coco.json``."""

    name = "roboflow_coco"
    modality = None
    templates = {"closed": "Does this image show {label}?", "which": "Which finding is marked in this image?"}

    def __init__(self, root: str | Path, image_dir: str | Path, splits: list[str] | None = None,
                 modality: str | None = None, name: str | None = None, keep_empty: bool = False):
        self.root = Path(root)
        self.modality = modality
        self.keep_empty = keep_empty
        if name:  # several Roboflow projects in one run each keep their own source name
            self.name = name
        files = ([self.root / s / ANNOTATION_FILE for s in splits] if splits
                 else sorted(self.root.glob(f"*/{ANNOTATION_FILE}")))
        if not files:
            raise FileNotFoundError(f"Roboflow COCO: no <split>/{ANNOTATION_FILE} under {self.root}")
        self.images: dict[str, tuple[Path, dict, list[dict]]] = {}
        self.problems: dict[str, InputRejected] = {}  # inputs rejected while reading the file
        labels: dict[str, None] = {}
        used: set[str] = set()
        categories: dict[str, None] = {}
        for path in files:
            coco = self._read(path)
            try:
                cats = {c["id"]: c for c in coco["categories"]}
                parents = {c.get("supercategory") for c in coco["categories"]}
                names = {cid: str(c["name"]) for cid, c in cats.items()
                         if not (c.get("supercategory") == "none" and c["name"] in parents)}
                categories.update(dict.fromkeys(str(c["name"]) for c in coco["categories"]))
                try:
                    order = sorted(names)
                except TypeError:  # ids of mixed types
                    order = sorted(names, key=str)
            except (KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"{path}: every category needs a hashable `id` and a `name` ({err!r})") from None
            labels.update(dict.fromkeys(names[c] for c in order))
            per_image: dict[object, list[dict]] = {}
            for n, ann in enumerate(coco["annotations"]):
                if not isinstance(ann, dict) or not isinstance(ann.get("image_id"), (int, str)):
                    raise ValueError(f"{path}: annotations[{n}] is not an object with an image_id")
                per_image.setdefault(ann["image_id"], []).append(ann)
                cid = ann.get("category_id")
                if isinstance(cid, (int, str)) and cid in names:
                    used.add(names[cid])
            self._add_images(path, coco["images"], per_image, names)
        self.labels = [label for label in labels if label in used]
        self.dropped_classes = [c for c in categories if c not in self.labels]

    @staticmethod
    def _read(path: Path) -> dict:
        coco = read_annotation_json(path, "COCO JSON")
        for key in ("images", "annotations", "categories"):
            if not isinstance(coco, dict) or not isinstance(coco.get(key), list):
                raise ValueError(f"{path}: COCO JSON needs a list {key!r}")
        return coco

    def _add_images(self, path: Path, entries: list, per_image: dict, names: dict) -> None:
        split = path.parent.name
        first: dict[str, tuple[str, int]] = {}  # file_name -> (key, entry index) of its first entry
        for n, img in enumerate(entries):
            where = f"{path} images[{n}]"
            name = img.get("file_name") if isinstance(img, dict) else None
            if not isinstance(name, str) or not name.strip() or not isinstance(img.get("id"), (int, str)):
                key = f"{split}/#entry{n:06d}"
                self.problems[key] = InputRejected("bad-annotation",
                                                   f"{where}: an image entry needs a string file_name and an id")
                self.images[key] = (path, {"file_name": None}, [])
                continue
            anns = [dict(a, _label=names.get(a.get("category_id")) if isinstance(a.get("category_id"), (int, str))
                         else None) for a in per_image.get(img["id"], [])]
            if name not in first:
                first[name] = (f"{split}/{name}", n)
                self.images[first[name][0]] = (path, img, anns)
                continue
            key, kept_at = first[name]
            dup = f"{split}/{name}#entry{n:06d}"
            kept_img = self.images[key][1]
            self.images[dup] = (path, img, [])
            if any(img.get(d) is not None and kept_img.get(d) is not None and img.get(d) != kept_img.get(d)
                   for d in ("width", "height")):
                self.problems[dup] = InputRejected(
                    "conflicting-duplicate", f"{where}: file_name {name!r} also at images[{kept_at}] with another "
                                             f"size; its {len(anns)} annotation(s) are not used")
            else:
                if img["id"] != kept_img["id"]:
                    self.images[key][2].extend(anns)
                self.problems[dup] = InputRejected(
                    "duplicate-entry", f"{where}: file_name {name!r} also at images[{kept_at}]; its {len(anns)} "
                                       f"annotation(s) are merged there")

    def inputs(self) -> list[str]:
        return list(self.images)

    def stamp(self, key: str):
        path, img, anns = self.images[key]
        image = path.parent / img["file_name"] if isinstance(img.get("file_name"), str) else None
        return [json.dumps([img, anns], sort_keys=True, default=str), file_stamp(image) if image else None]

    def load(self, key: str) -> SourceItem:
        if key in self.problems:
            raise self.problems[key]
        path, img, anns = self.images[key]
        image = inside_root(self.root, img["file_name"], f"{path} image {img['file_name']!r}", base=path.parent)
        if not anns and not self.keep_empty:
            raise InputRejected("no-annotation", f"{path}: image {img['file_name']!r} has no annotation")
        rois, labels = [], []
        for ann in anns:
            bbox = ann.get("bbox")
            if ann["_label"] is None:
                raise InputRejected("bad-annotation", f"{path}: annotation {ann.get('id')} has unknown category "
                                                      f"{ann.get('category_id')!r}")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise InputRejected("bad-annotation", f"{path}: annotation {ann.get('id')} bbox {bbox!r}")
            x, y, w, h = finite(bbox, f"{path}: annotation {ann.get('id')} bbox")
            if w <= 0 or h <= 0:
                raise InputRejected("degenerate-box", f"{path}: annotation {ann.get('id')} bbox {bbox!r}")
            rois.append(RoI("box", box=(x, y, x + w, y + h), label=ann["_label"]))
            labels.append(ann["_label"])
        return SourceItem(key=key, images=[str(image)], labels=labels, rois=rois, modality=self.modality,
                          metadata={"split": path.parent.name, "file_name": img["file_name"]})
