"""The offline template synthesizer: every stage from the record itself, no model (the demo's default).

- Localization: a text RoI's own words; a box RoI placed by its centre in the image's thirds (the
  structured ``box_2d`` follows); the global RoI as the whole image.
- Visual analysis: measured from the pixels — the region's size relative to the image, its shape
  (aspect ratio) and its brightness against the rest of the image — with the modality as context.
- Knowledge: the sentence the knowledge table gives for (label, template); ``_default`` otherwise.
- Conclusion: ties the measured evidence and the knowledge to the reference answer; answer = y.

It is deterministic, so a regeneration attempt gives the same draft; its drafts still go through
the leak and scaffold checks like any other. Registered as ``template`` in ``medsage.synthesizers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from medsage.data_pipeline.synthesis.leaks import guidance_label, reference_answer
from medsage.data_pipeline.synthesis.prompts import load_knowledge, load_templates
from medsage.data_pipeline.synthesis.rpa import Draft, Unit, with_region
from medsage.records import Provenance
from medsage.scaffold import Trajectory

NAME = "template"


def _third(v: float, size: float, words: tuple[str, str, str]) -> str:
    return words[min(2, int(3 * v / size))] if size > 0 else words[1]


@lru_cache(maxsize=64)
def _gray(path: str):
    """The image as a float grey array; cached, since every unit of a record reads the same image."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("L"), dtype=np.float32)
    arr.setflags(write=False)
    return arr


def _measure(unit: Unit) -> dict:
    """Size, shape and relative brightness of the RoI, from the image pixels."""
    import numpy as np

    arr = _gray(unit.sample.images[0])
    h, w = arr.shape
    if unit.crop_box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in unit.crop_box)
        inside = arr[max(0, y1):max(y1 + 1, y2), max(0, x1):max(x1 + 1, x2)]
        mask = np.ones_like(arr, dtype=bool)
        mask[max(0, y1):y2, max(0, x1):x2] = False
        outside = arr[mask] if mask.any() else arr.ravel()
        area = (x2 - x1) * (y2 - y1) / float(w * h)
        aspect = max(x2 - x1, y2 - y1) / max(1, min(x2 - x1, y2 - y1))
        diff = float(inside.mean() - outside.mean())
        return {"area": area, "aspect": aspect, "diff": diff, "center": ((x1 + x2) / 2, (y1 + y2) / 2), "size": (w, h)}
    return {"area": 1.0, "aspect": max(w, h) / max(1, min(w, h)), "diff": 0.0, "center": (w / 2, h / 2),
            "size": (w, h), "spread": float(arr.std())}


class TemplateSynthesizer:
    """Stages from annotations and a knowledge table (``knowledge_file``, per label and template)."""

    name = NAME

    @dataclass
    class Config:
        """The synthesis recipe's keys this synthesizer reads (recipes/synthesis/default.yaml)."""

        templates_file: str   # the question templates T
        knowledge_file: str   # the knowledge table, per label and template

    def __init__(self, cfg: Config, client=None):
        templates = load_templates(cfg.templates_file)
        self.knowledge = load_knowledge(cfg.knowledge_file, templates)

    def _loc(self, unit: Unit, m: dict) -> str:
        roi = unit.roi
        if roi.kind == "text":
            where = roi.text.strip().rstrip(".")
            return f"The region of interest is the {where}."
        if unit.whole_image:
            return "The whole image is the region of interest, read as one field."
        (cx, cy), (w, h) = m["center"], m["size"]
        vertical = _third(cy, h, ("upper", "central", "lower"))
        horizontal = _third(cx, w, ("left side", "middle", "right side"))
        if (vertical, horizontal) == ("central", "middle"):
            return "The region of interest lies in the centre of the image."
        where = f"{vertical} part, {horizontal} of the image"
        return f"The region of interest lies in the {where}."

    def _finding(self, unit: Unit, m: dict) -> str:
        """What the pixels show, as a noun phrase the visual and the conclusion stages share."""
        if unit.crop_box is None:
            texture = "varied" if m.get("spread", 0) > 40 else "fairly uniform"
            return f"the named area within an image of {texture} intensity"
        size = "small" if m["area"] < 0.05 else "moderate" if m["area"] < 0.2 else "large"
        shape = "rounded" if m["aspect"] < 1.5 else "elongated"
        d = m["diff"]
        tone = ("markedly brighter than" if d > 40 else "brighter than" if d > 10 else
                "markedly darker than" if d < -40 else "darker than" if d < -10 else "similar in brightness to")
        return f"a {size}, {shape} area {tone} the surrounding image"

    def _vis(self, unit: Unit, finding: str) -> str:
        modality = unit.sample.modality or "medical"
        return (f"Context: a {modality} image; the surrounding structures are shown for reference. "
                f"Region: {finding}.")

    def _con(self, unit: Unit, finding: str) -> str:
        ref = reference_answer(unit.sample)
        return f"The region shows {finding}; read against the criteria above, this supports the answer {ref}."

    async def draft(self, unit: Unit, attempt: int = 0) -> Draft:
        m = _measure(unit)
        loc = self._loc(unit, m)
        finding = self._finding(unit, m)
        vis = self._vis(unit, finding)
        table = self.knowledge.get(guidance_label(unit.sample).lower(), self.knowledge["_default"])
        know = table[unit.template]
        traj = Trajectory(loc=with_region(loc, unit.region()), vis=vis, know=know, con=self._con(unit, finding),
                          answer=reference_answer(unit.sample))
        made_by = f"{NAME}:{unit.template}"
        return Draft(traj, loc, [Provenance(stage=s, made_by=made_by) for s in ("loc", "vis", "know", "con")])
