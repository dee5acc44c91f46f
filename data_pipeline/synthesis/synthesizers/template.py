"""The offline template synthesizer: every stage from the record itself, no model (the demo's default).

- Localization: a text RoI's own words; a box RoI placed by its centre in the image's thirds (the
  structured ``box_2d`` follows); the global RoI as the whole image.
- Visual analysis: measured from the pixels — the region's size relative to the image, its shape
  (aspect ratio) and its brightness against the rest of the image — with the modality as context.
- Knowledge: the sentence the knowledge table gives for (label, template); ``_default`` otherwise.
- Conclusion: ties the measured evidence and the knowledge to the reference answer; answer = y.
- Retry examples (``revision``, for ``rpa.retry_share``): a τ1 that misreads the measured evidence and answers
  wrongly, and the self-check that corrects it from the same measurements.

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

    def _con(self, finding: str, answer: str) -> str:
        return f"The region shows {finding}; read against the criteria above, this supports the answer {answer}."

    async def draft(self, unit: Unit, attempt: int = 0) -> Draft:
        m = _measure(unit)
        loc = self._loc(unit, m)
        finding = self._finding(unit, m)
        vis = self._vis(unit, finding)
        table = self.knowledge.get(guidance_label(unit.sample).lower(), self.knowledge["_default"])
        know = table[unit.template]
        answer = reference_answer(unit.sample)
        traj = Trajectory(loc=with_region(loc, unit.region()), vis=vis, know=know, con=self._con(finding, answer),
                          answer=answer)
        made_by = f"{NAME}:{unit.template}"
        return Draft(traj, loc, [Provenance(stage=s, made_by=made_by) for s in ("loc", "vis", "know", "con")])

    def revision(self, unit: Unit, right: Trajectory, wrong: str) -> tuple[Trajectory, str]:
        """A wrong first trajectory for ``unit`` and the self-check that corrects it (SFT retry rows, ``retry.py``).

        The wrong τ1 keeps the localization and the knowledge of ``right`` but misreads the region (the measured
        brightness, or for a whole image its texture, turned round) and concludes ``wrong``, consistently. The
        check reviews §3.3's three dimensions against the measured evidence and names the right answer; ``right``
        itself is the corrected τ2.
        """
        m = _measure(unit)
        finding, misread = self._finding(unit, m), self._finding(unit, _misread(m))
        first = Trajectory(loc=right.loc, vis=self._vis(unit, misread), know=right.know,
                           con=self._con(misread, wrong), answer=wrong)
        # Short: a small model's retry budget holds this check and the whole revised trajectory.
        check = (f"Visual grounding: {self._loc(unit, m)} It stands. "
                 f"Visual analysis: not {misread} but {finding}. "
                 f"Knowledge consistency: that evidence supports {reference_answer(unit.sample)}, not {wrong}.")
        return first, check


def _misread(m: dict) -> dict:
    """The measurements read the wrong way round: brighter for darker (a faint region as markedly bright), a
    varied texture for a uniform one."""
    diff = m["diff"]
    return {**m, "diff": -diff if abs(diff) > 10 else 50.0, "spread": 0.0 if m.get("spread", 0) > 40 else 100.0}
