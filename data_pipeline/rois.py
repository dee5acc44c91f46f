"""RoI normalisation (§3.1, Eq. 1): a set R = {r_1..r_M} of plausible regions per image.

Coordinate RoIs gain seeded variants — coordinate perturbation (each side moved by up to ``jitter``
of the box size), context expansion (the box grown by ``expand_scale`` around its centre) and
sub-region sampling (a random box covering ``subregion_min``..1 of each side, inside the original) —
all clipped to the image. Text RoIs are kept as they are. The full image is always added as the
global RoI. Boxes stay in pixels in the record; ``roi_region`` gives the scaffold's 0-1000 ``box_2d``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from medsage.records import RoI
from medsage.scaffold import Region


@dataclass
class RoIConfig:
    """How many variants of each coordinate RoI, and how far they may move."""

    perturb: int = 2  # perturbed copies per box
    jitter: float = 0.1  # max shift of each side, as a fraction of the box width/height
    expand: int = 1  # context-expanded copies per box
    expand_scale: float = 1.5  # side length factor of an expanded box
    subregion: int = 1  # sub-regions sampled per box
    subregion_min: float = 0.5  # smallest sub-region side, as a fraction of the box side
    min_side: float = 2.0  # pixels; a variant thinner than this after clipping is dropped

    def __post_init__(self) -> None:
        if min(self.perturb, self.expand, self.subregion) < 0:
            raise ValueError("perturb, expand and subregion counts must be >= 0")
        if not 0 <= self.jitter < 0.5:
            raise ValueError(f"jitter must be in [0, 0.5), got {self.jitter}")
        if self.expand_scale < 1:
            raise ValueError(f"expand_scale must be >= 1, got {self.expand_scale}")
        if not 0 < self.subregion_min <= 1:
            raise ValueError(f"subregion_min must be in (0, 1], got {self.subregion_min}")


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, ...]:
    x1, y1, x2, y2 = box
    return (round(max(0.0, x1), 2), round(max(0.0, y1), 2), round(min(float(width), x2), 2),
            round(min(float(height), y2), 2))


def _variants(roi: RoI, width: int, height: int, cfg: RoIConfig, rng: random.Random) -> list[RoI]:
    x1, y1, x2, y2 = roi.box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    out: list[tuple[str, tuple[float, ...]]] = []
    for _ in range(cfg.perturb):
        dx = [rng.uniform(-cfg.jitter, cfg.jitter) * w for _ in range(2)]
        dy = [rng.uniform(-cfg.jitter, cfg.jitter) * h for _ in range(2)]
        out.append(("perturb", (x1 + dx[0], y1 + dy[0], x2 + dx[1], y2 + dy[1])))
    for k in range(cfg.expand):
        scale = cfg.expand_scale if cfg.expand == 1 else 1 + (cfg.expand_scale - 1) * (k + 1) / cfg.expand
        out.append(("expand", (cx - w * scale / 2, cy - h * scale / 2, cx + w * scale / 2, cy + h * scale / 2)))
    for _ in range(cfg.subregion):
        sw, sh = w * rng.uniform(cfg.subregion_min, 1.0), h * rng.uniform(cfg.subregion_min, 1.0)
        sx, sy = x1 + rng.uniform(0, w - sw), y1 + rng.uniform(0, h - sh)
        out.append(("subregion", (sx, sy, sx + sw, sy + sh)))
    kept = []
    for origin, box in out:
        box = _clip(box, width, height)
        if box[2] - box[0] >= cfg.min_side and box[3] - box[1] >= cfg.min_side:
            kept.append(RoI("box", box=box, label=roi.label, origin=origin))
    return kept


def normalise_rois(rois: list[RoI], width: int, height: int, cfg: RoIConfig, rng: random.Random) -> list[RoI]:
    """The annotated RoIs (boxes clipped), their variants, text RoIs unchanged, then the global RoI."""
    out: list[RoI] = []
    for roi in rois:
        if roi.kind == "box":
            out.append(RoI("box", box=_clip(roi.box, width, height), label=roi.label, origin=roi.origin))
            out.extend(_variants(roi, width, height, cfg, rng))
        elif roi.kind == "text":
            out.append(roi)
    out.append(RoI("global", box=(0.0, 0.0, float(width), float(height)), label="full image", origin="global"))
    return out


def roi_region(roi: RoI, width: int, height: int) -> Region:
    """A box or global RoI as the scaffold's 0-1000 ``box_2d`` region."""
    if roi.box is None:
        raise ValueError(f"a {roi.kind} RoI has no box")
    return Region.box_from_pixels(roi.box, width, height, label=roi.label)
