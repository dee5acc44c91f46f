"""Generated LVKC samples for the embedded demo: synthetic CT-like slices with one bright lesion.

No network and no real data: each image is a dark body outline with a bright ellipse whose box is
known, so every stage of the trajectory is written from the annotation (the same information an
offline template synthesizer has). The data pipeline issues replace this with real sources.
"""

from __future__ import annotations

import random
from pathlib import Path

from medsage.records import Provenance, RoI, Sample
from medsage.scaffold import Region, Trajectory

ORGANS = ["liver", "lung", "kidney", "bone"]
_KNOWLEDGE = {
    "liver": "A focal area denser than the surrounding parenchyma in the upper abdomen fits a hepatic lesion.",
    "lung": "A rounded opacity within aerated lung fields fits a pulmonary nodule.",
    "kidney": "A well defined focus in the retroperitoneal flank fits a renal lesion.",
    "bone": "A sharply marginated bright focus along the skeleton fits an osseous lesion.",
}
# Where each organ's lesion is drawn (fraction of the image), and how it is described.
_PLACES = {
    "liver": ((0.55, 0.30), "right upper abdomen"),
    "lung": ((0.30, 0.35), "upper thorax"),
    "kidney": ((0.65, 0.65), "left flank"),
    "bone": ((0.50, 0.85), "posterior midline"),
}


def _draw(path: Path, size: int, center: tuple[float, float], radius: int, rng: random.Random) -> tuple:
    from PIL import Image, ImageDraw

    img = Image.new("L", (size, size), 10)
    draw = ImageDraw.Draw(img)
    draw.ellipse([4, 8, size - 4, size - 8], fill=70)  # body outline
    cx, cy = center[0] * size, center[1] * size
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    draw.ellipse(box, fill=200 + rng.randrange(40))
    img.convert("RGB").save(path)
    return box


def make_demo_samples(out_dir: str | Path, n: int = 12, seed: int = 0, size: int = 112) -> list[Sample]:
    """Write ``n`` images under ``out_dir/images`` and return their samples with trajectories."""
    rng = random.Random(seed)
    images = Path(out_dir) / "images"
    images.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        organ = ORGANS[i % len(ORGANS)]
        (fx, fy), place = _PLACES[organ]
        radius = rng.randrange(8, 16)
        path = images / f"demo_{i:03d}.png"
        box = _draw(path, size, (fy, fx), radius, rng)
        region = Region.box_from_pixels(box, size, size, label="bright focal lesion")
        kind = ("closed", "choice", "open")[i % 3]
        if kind == "closed":
            question, answer, options = f"Is there a lesion in the {organ}?", "yes", None
        elif kind == "choice":
            letters = "ABCD"
            pos = i % 4  # balance the answer position
            others = [o for o in ORGANS if o != organ]
            ordered = others[:pos] + [organ] + others[pos:]
            options = {letters[k]: name.capitalize() for k, name in enumerate(ordered)}
            question, answer = "Which organ contains the lesion?", letters[pos]
        else:
            question, answer, options = "Which organ contains the lesion?", organ, None
        answer_text = {"closed": "Yes", "choice": f"{answer}. {organ.capitalize()}", "open": organ.capitalize()}[kind]
        traj = Trajectory(
            loc=f"The region of interest is in the {place} {region.to_json()}.",
            vis="A round, sharply marginated focus much brighter than the surrounding tissue.",
            know=_KNOWLEDGE[organ],
            con=f"The bright focus in the {place} indicates a lesion of the {organ}.",
            answer=answer_text,
        )
        samples.append(Sample(
            id=f"demo-{i:03d}", source="demo", images=[str(path.resolve())], question=question,
            answer=answer, question_type=kind, options=options, modality="CT",
            rois=[RoI("box", box=box, label=organ)], trajectory=traj,
            provenance=[Provenance(stage=s, made_by="demo-template") for s in ("loc", "vis", "know", "con")],
        ))
    return samples
