"""The quality filter (Appendix A.3.1): every image readable, large enough and not blank; every box
inside its image and not degenerate. Each failure has a short stable reason, counted in the summary.

Reasons: ``unreadable-image`` (missing, not an image, truncated), ``too-large`` (over ``max_pixels``:
refused before decoding, a decompression bomb stops nothing), ``too-small``, ``near-constant``,
``box-outside-image``, ``degenerate-box`` (every box of the item degenerate: a single stray one among good boxes is
dropped alone, ``drop_degenerate_boxes``). Wide images (16-bit) are judged on their own range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from medsage.data_pipeline.sources.base import SourceItem
from medsage.images import DEFAULT_MAX_PIXELS, ImageTooLarge, grey8, open_image


@dataclass
class QualityConfig:
    """Thresholds of the quality filter."""

    min_side: int = 64  # pixels; smaller images carry too little detail to localise anything
    min_std: float = 2.0  # grey-level std (0-255); below it the image is blank or a flat fill
    box_tolerance: float = 2.0  # pixels a box may exceed the image by (annotation rounding) before rejection
    min_box_side: float = 2.0  # pixels; a thinner box marks no region
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height above which an image is rejected before decoding


def image_stats(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int, float]:
    """Width, height and grey-level std of an image; raises ``OSError``/``ValueError`` when unreadable
    (``ImageTooLarge`` over ``max_pixels``)."""
    import numpy as np

    with open_image(path, max_pixels) as img:
        img.load()  # a truncated file fails here, not at open
        width, height = img.size
        grey = grey8(img).astype(np.float32)
    return width, height, float(grey.std())


def drop_degenerate_boxes(item: SourceItem, cfg: QualityConfig) -> list[dict]:
    """Remove from ``item.rois`` each box thinner than ``cfg.min_box_side`` while a usable box remains, and return
    what was removed, each with its reason (kept in the record's ``metadata.dropped_rois``).

    One stray sub-pixel box beside good ones is a slip of the annotation tool: it loses that box, not the image
    and its good boxes. An item whose every box is degenerate is left whole, and ``check_item`` rejects it.
    """

    def thin(roi) -> bool:
        x1, y1, x2, y2 = roi.box
        return x2 - x1 < cfg.min_box_side or y2 - y1 < cfg.min_box_side

    boxes = [r for r in item.rois if r.kind == "box" and all(math.isfinite(v) for v in r.box)]
    bad = [r for r in boxes if thin(r)]
    if not bad or len(bad) == len(boxes):
        return []
    item.rois = [r for r in item.rois if not any(r is b for b in bad)]
    return [{"box": list(r.box), "label": r.label, "reason": "degenerate-box",
             "detail": f"box {r.box} is thinner than {cfg.min_box_side} px"} for r in bad]


def check_item(item: SourceItem, cfg: QualityConfig) -> tuple[str | None, str, tuple[int, int]]:
    """``(reason, detail, (width, height) of the first image)``; reason is ``None`` when the item passes."""
    size = (0, 0)
    if not item.images:
        return "unreadable-image", "the item names no image", size
    for i, path in enumerate(item.images):
        try:
            width, height, std = image_stats(path, cfg.max_pixels)
        except ImageTooLarge as err:
            return "too-large", str(err), size
        except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three on bad files
            return "unreadable-image", f"{path}: {type(err).__name__}: {err}", size
        if i == 0:
            size = (width, height)
        if min(width, height) < cfg.min_side:
            return "too-small", f"{path}: {width}x{height} < {cfg.min_side} px", size
        if std < cfg.min_std:
            return "near-constant", f"{path}: grey-level std {std:.2f} < {cfg.min_std}", size
    width, height = size
    tol = cfg.box_tolerance
    for roi in item.rois:
        if roi.kind != "box":
            continue
        x1, y1, x2, y2 = roi.box
        if not all(math.isfinite(v) for v in roi.box):
            return "bad-annotation", f"box {roi.box} holds a value that is not a finite number", size
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            return "box-outside-image", f"box {roi.box} outside the {width}x{height} image", size
        if x2 - x1 < cfg.min_box_side or y2 - y1 < cfg.min_box_side:
            return "degenerate-box", f"box {roi.box} is thinner than {cfg.min_box_side} px", size
    return None, "", size
