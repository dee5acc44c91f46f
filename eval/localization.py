"""What a prediction shows beyond its answer: where its ``<LOC>`` points and whether its format is strict.

- ``loc_iou``: IoU of the first ``box_2d`` in the answered trajectory's ``<LOC>`` (the revised one of a
  self-check retry) against the best-matching annotation box of the item, both on the scaffold's
  0-1000 grid. Only items with an annotation box have one; a missing or unparseable box scores 0.
- ``strict_format``: the whole output passes ``medsage.scaffold.check_strict`` (no preamble; a
  ``<CHECK>`` retry is allowed and both trajectories are checked).

Regions are parsed only by ``medsage.scaffold``. ``truth_boxes`` gives the grid boxes an item carries
in a predictions line, so a file scores on its own.
"""

from __future__ import annotations

from medsage.scaffold import Region, check_strict, parse_lenient


def truth_boxes(sample) -> list[list[int]]:
    """The sample's annotation boxes as ``[y1, x1, y2, x2]`` on the 0-1000 grid (its RoI variants left out)."""
    size = sample.metadata.get("image_size")
    if not size:
        return []
    width, height = size
    return [list(Region.box_from_pixels(roi.box, width, height).coords)
            for roi in sample.rois if roi.kind == "box" and roi.origin == "annotation"]


def check_truth_boxes(boxes, where: str) -> str | None:
    """Why ``boxes`` is not a list of ``[y1, x1, y2, x2]`` grid boxes, or None."""
    if boxes is None:
        return None
    if not isinstance(boxes, list) or not all(
            isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        for v in b) for b in boxes):
        return f"{where}: 'truth_boxes' must be a list of [y1, x1, y2, x2] grid boxes, got {boxes!r}"
    return None


def iou(a, b) -> float:
    """Intersection over union of two ``[y1, x1, y2, x2]`` boxes (0 when either is empty)."""
    dy = min(a[2], b[2]) - max(a[0], b[0])
    dx = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, dy) * max(0.0, dx)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def loc_iou(prediction: str, truth: list | None) -> float | None:
    """IoU of the prediction's first ``<LOC>`` box with its best-matching truth box; None without a truth box."""
    if not truth:
        return None
    regions, _ = parse_lenient(prediction).regions()
    box = next((r.coords for r in regions if r.kind == "box"), None)
    return 0.0 if box is None else max(iou(box, t) for t in truth)


def strict_format(prediction: str) -> bool:
    _, issues = check_strict(prediction.strip(), allow_check=True)
    return not issues


def localization_fields(prediction: str, item: dict) -> dict:
    """The verdict fields of this module, for one item."""
    value = loc_iou(prediction, item.get("truth_boxes"))
    return {"question_kind": item.get("question_kind"), "strict_format": strict_format(prediction),
            "loc_iou": None if value is None else round(value, 4)}


def localization_summary(vs: list[dict]) -> dict:
    """Per question kind accuracy, mean ``<LOC>`` IoU over the items with a truth box, strict-format rate (%)."""
    kinds: dict[str, list[dict]] = {}
    for v in vs:
        if v.get("question_kind"):
            kinds.setdefault(str(v["question_kind"]), []).append(v)
    located = [v["loc_iou"] for v in vs if v.get("loc_iou") is not None]
    return {
        "by_kind": {k: {"n": len(kv), "correct": sum(v["correct"] for v in kv),
                        "accuracy": round(100.0 * sum(v["correct"] for v in kv) / len(kv), 2)}
                    for k, kv in sorted(kinds.items())},
        "loc_iou": round(sum(located) / len(located), 4) if located else None,
        "loc_iou_n": len(located),
        "strict_format": round(100.0 * sum(v.get("strict_format", False) for v in vs) / len(vs), 2) if vs else None,
    }
