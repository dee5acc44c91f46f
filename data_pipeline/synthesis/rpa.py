"""Reasoning Path Augmentation (§3.1): M RoIs x T templates -> several answer-consistent trajectories.

A *unit* is one (record, RoI, template) pair; a synthesizer turns a unit into a *draft* trajectory
(the ``Synthesizer`` contract below, which a lab's own synthesizer follows to be registered in
``medsage.synthesizers``).
``plan_units`` pairs a record's RoIs with the interpretation templates; ``draw.py`` chooses which of
those units are drafted, before any call.

The Table 3 "Low-level Aug" baseline is here too (``low_level_copies``): image-level photometric
perturbations of a record, each carrying the record's single trajectory, so the ablation can be rerun.
Photometric only: flips and rotations would move the box and swap laterality.
"""

from __future__ import annotations

import copy
import io
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from medsage.records import Provenance, RoI, Sample
from medsage.scaffold import GRID, Region, Trajectory

# The label written inside <LOC>'s box_2d. Deliberately neutral: the annotation label often *is* the
# answer, and naming it in the localization would let a model copy the answer instead of reasoning.
REGION_LABEL = "region of interest"


class SynthesisError(RuntimeError):
    """A stage that could not be written; ``reason`` is a short stable code (it is counted)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Unit:
    """One trajectory to write: a record, one of its RoIs, one interpretation template."""

    sample: Sample
    roi_index: int
    roi: RoI
    template: str

    @property
    def uid(self) -> str:
        return f"{self.sample.id}#r{self.roi_index}-{self.template}"

    def image_size(self) -> tuple[int, int]:
        size = self.sample.metadata.get("image_size")
        if size:
            return int(size[0]), int(size[1])
        from PIL import Image

        with Image.open(self.sample.images[0]) as img:
            return img.size

    @property
    def whole_image(self) -> bool:
        """The global RoI (§3.1: the full image, for holistic reasoning)."""
        return self.roi.kind == "global" or self.roi.origin == "global"

    @property
    def crop_box(self) -> tuple[float, float, float, float] | None:
        """The pixel box to crop for Eq. 2's RoI evidence; None for text and whole-image RoIs."""
        return self.roi.box if self.roi.kind == "box" and not self.whole_image else None

    def region(self) -> Region | None:
        """The ``box_2d`` inside <LOC>: the RoI's box, the full grid for the global RoI, none for text RoIs
        (a text RoI has no coordinates to give; its localization is the words alone)."""
        if self.whole_image:
            return Region("box", (0, 0, GRID, GRID), label=REGION_LABEL)
        if self.roi.kind != "box":
            return None
        w, h = self.image_size()
        return Region.box_from_pixels(self.roi.box, w, h, label=REGION_LABEL)


@dataclass
class Draft:
    """A synthesized trajectory, the localization prose as the model wrote it, and who wrote what."""

    trajectory: Trajectory
    loc_prose: str
    provenance: list[Provenance] = field(default_factory=list)


class Synthesizer(Protocol):
    """What ``medsage.synthesizers`` entries are: a class whose ``Config`` dataclass names the recipe keys
    it reads, built as ``cls(config, client)`` with that typed section (``synthesizer_section``) and a
    ``ChatClient`` or None when no endpoint is configured, then asked for one draft per unit and attempt.
    Raise ``SynthesisError`` for a stage that cannot be written."""

    name: str
    Config: type

    async def draft(self, unit: Unit, attempt: int = 0) -> Draft: ...


def synthesizer_section(cls: type, cfg: dict, where: str = "recipes/synthesis"):
    """The keys of the synthesis recipe that ``cls.Config`` declares, typed (``medsage.config.typed``):
    a synthesizer sees its own settings, not the whole recipe."""
    from dataclasses import fields

    from medsage.config import typed

    return typed(cls.Config, {f.name: cfg[f.name] for f in fields(cls.Config) if f.name in cfg}, where)


def with_region(prose: str, region: Region | None) -> str:
    """The ``<LOC>`` text: the anatomical prose, then the structured region as in the paper's examples."""
    prose = prose.strip()
    return f"{prose} {region.to_json()}" if region is not None else prose


def plan_units(sample: Sample, templates: list[str], *, max_rois: int | None = None,
               max_templates: int | None = None, seed: int = 0,
               kinds: tuple[str, ...] = ("box", "text", "global")) -> list[Unit]:
    """Every (RoI, template) pair of a record, up to M RoIs of the given kinds and T templates per RoI.

    A record without RoIs is reasoned over the whole image (the global RoI). Which templates a RoI
    gets, when fewer than T, is drawn per RoI so that all templates are used across the record.
    """
    rois = list(sample.rois) or [RoI("global", label="full image", origin="global")]
    indexed = [(i, r) for i, r in enumerate(rois) if r.kind in kinds]
    indexed = indexed[:max_rois] if max_rois else indexed
    rng = random.Random(f"{seed}:{sample.id}")
    k = min(max_templates or len(templates), len(templates))
    offset = rng.randrange(len(templates))
    units = []
    for n, (i, roi) in enumerate(indexed):
        chosen = [templates[(offset + n + j) % len(templates)] for j in range(k)]  # rotate, so all are used
        units += [Unit(sample, i, roi, t) for t in chosen]
    return units


# --------------------------------------------------------------------------------------------
# The Table 3 "Low-level Aug" baseline
# --------------------------------------------------------------------------------------------

PERTURBATIONS = ("brightness", "contrast", "noise", "blur")


def _perturb(img, kind: str, rng: random.Random):
    from PIL import ImageEnhance, ImageFilter

    # A factor 10-25% away from 1, up or down: near 1 would be no augmentation at all.
    factor = 1 + rng.choice((-1, 1)) * rng.uniform(0.1, 0.25)
    if kind == "brightness":
        return ImageEnhance.Brightness(img).enhance(factor)
    if kind == "contrast":
        return ImageEnhance.Contrast(img).enhance(factor)
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 1.5)))
    import numpy as np

    arr = np.asarray(img).astype(np.float32)
    noisy = arr + np.random.default_rng(rng.randrange(2**32)).normal(0, 8.0, arr.shape)
    from PIL import Image

    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def low_level_copies(sample: Sample, n: int, image_dir: str | Path, seed: int = 0) -> list[Sample]:
    """``n`` copies of a record with a trajectory, each on a photometrically perturbed image.

    The trajectory is the record's own (one per image, as in the baseline): only pixels change.
    """
    if sample.trajectory is None:
        raise ValueError(f"sample {sample.id}: low-level augmentation needs a trajectory")
    from PIL import Image

    from medsage.io import atomic_write_bytes

    image_dir = Path(image_dir)
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}:{sample.id}:{i}")
        kind = PERTURBATIONS[i % len(PERTURBATIONS)]
        paths = []
        for j, path in enumerate(sample.images):
            with Image.open(path) as img:
                perturbed = _perturb(img.convert("RGB"), kind, rng)
            buf = io.BytesIO()
            perturbed.save(buf, format="PNG")
            target = image_dir / f"{Path(path).stem}.lowaug{i}-{kind}.{j}.png"
            atomic_write_bytes(target, buf.getvalue())
            paths.append(str(target.resolve()))
        copy_ = copy.deepcopy(sample)
        copy_.id = f"{sample.id}~aug{i}"
        copy_.images = paths
        copy_.metadata = {**sample.metadata, "low_level_aug": {"kind": kind, "of": sample.id}}
        out.append(copy_)
    return out
