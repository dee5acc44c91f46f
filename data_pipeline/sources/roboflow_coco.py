"""Roboflow medical detection exports in COCO form: ``<split>/_annotations.coco.json`` beside the images.

One input per image. Boxes are COCO ``bbox`` ``[x, y, width, height]`` in pixels. Roboflow adds a
placeholder category named after the project (supercategory ``"none"``) that every real class points
to as its supercategory; it is not a label and is left out of the label set, as is any category no
annotation uses (``dropped_classes`` lists both), so neither is asked about nor used as a distractor.
An image without annotations has nothing to ask about and is rejected as ``no-annotation``.
"""

from __future__ import annotations

import json
from pathlib import Path

from medsage.data_pipeline.sources.base import InputRejected, SourceItem
from medsage.records import RoI

ANNOTATION_FILE = "_annotations.coco.json"


class RoboflowCocoSource:
    """``root`` holds one folder per split (train/valid/test), each with ``_annotations.coco.json``."""

    name = "roboflow_coco"
    modality = None
    templates = {"closed": "Does this image show {label}?", "which": "Which finding is marked in this image?"}

    def __init__(self, root: str | Path, image_dir: str | Path, splits: list[str] | None = None,
                 modality: str | None = None, name: str | None = None):
        self.root = Path(root)
        self.modality = modality
        if name:  # several Roboflow projects in one run each keep their own source name
            self.name = name
        files = ([self.root / s / ANNOTATION_FILE for s in splits] if splits
                 else sorted(self.root.glob(f"*/{ANNOTATION_FILE}")))
        if not files:
            raise FileNotFoundError(f"Roboflow COCO: no <split>/{ANNOTATION_FILE} under {self.root}")
        self.images: dict[str, tuple[Path, dict, list[dict]]] = {}
        labels: dict[str, None] = {}
        used: set[str] = set()
        categories: dict[str, None] = {}
        for path in files:
            try:
                coco = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}: cannot read COCO JSON: {err}") from None
            for key in ("images", "annotations", "categories"):
                if not isinstance(coco.get(key), list):
                    raise ValueError(f"{path}: COCO JSON needs a list {key!r}")
            cats = {c["id"]: c for c in coco["categories"]}
            parents = {c.get("supercategory") for c in coco["categories"]}
            names = {cid: c["name"] for cid, c in cats.items()
                     if not (c.get("supercategory") == "none" and c["name"] in parents)}
            labels.update(dict.fromkeys(names[c] for c in sorted(names)))
            categories.update(dict.fromkeys(c["name"] for c in coco["categories"]))
            used.update(names[a.get("category_id")] for a in coco["annotations"] if a.get("category_id") in names)
            per_image: dict[int, list[dict]] = {}
            for ann in coco["annotations"]:
                per_image.setdefault(ann.get("image_id"), []).append(ann)
            split = path.parent.name
            for img in coco["images"]:
                anns = [dict(a, _label=names.get(a.get("category_id"))) for a in per_image.get(img["id"], [])]
                self.images[f"{split}/{img['file_name']}"] = (path, img, anns)
        self.labels = [label for label in labels if label in used]
        self.dropped_classes = [c for c in categories if c not in self.labels]

    def inputs(self) -> list[str]:
        return list(self.images)

    def load(self, key: str) -> SourceItem:
        path, img, anns = self.images[key]
        if not anns:
            raise InputRejected("no-annotation", f"{path}: image {img['file_name']!r} has no annotation")
        rois, labels = [], []
        for ann in anns:
            bbox = ann.get("bbox")
            if ann["_label"] is None:
                raise InputRejected("bad-annotation", f"{path}: annotation {ann.get('id')} has unknown category "
                                                      f"{ann.get('category_id')!r}")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
                raise InputRejected("bad-annotation", f"{path}: annotation {ann.get('id')} bbox {bbox!r}")
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                raise InputRejected("degenerate-box", f"{path}: annotation {ann.get('id')} bbox {bbox!r}")
            rois.append(RoI("box", box=(x, y, x + w, y + h), label=ann["_label"]))
            labels.append(ann["_label"])
        image = (path.parent / img["file_name"]).resolve()
        return SourceItem(key=key, images=[str(image)], labels=labels, rois=rois, modality=self.modality,
                          metadata={"split": path.parent.name, "file_name": img["file_name"]})
