"""The generated lesion task of the miniature: CT-like slices whose answers depend only on the image.

Each image is a soft-tissue body (a rounded outline of random extent and grey, strong smooth shading, blobs of
any tissue grey) with a fixed anatomy: one organ per quadrant, each its own grey (``ORGANS``), as every abdomen
has its liver on the same side. It holds 0, 1 or 2 lesions (1:2:1). A lesion is an ellipse of radius
size/10..size/8 at the centre of its quadrant (upper left, upper right, lower left, lower right), moved by at most
size/32, so its quadrant is never in doubt and it sits in that quadrant's organ; two lesions sit in two quadrants
and share one density. Hyperdense lesions are far brighter than any tissue, hypodense ones far darker than any
tissue yet brighter than air, so density is a local contrast a small vision tower can see; where a lesion is, a
tower without absolute positions (Qwen2.5-VL's) reads from the organ around it.

Written as a Roboflow COCO export (the layout ``data_pipeline/sources/roboflow_coco.py`` reads), with Roboflow's
placeholder category: ``root/<split>/_annotations.coco.json`` + PNG slices. The same seed gives the same bytes.

The data pipeline asks one question per slice, its kind cycling by position over the recipe's ``types``
(recipes/data/miniature.yaml: presence, quadrant, choice, count). The slices are laid out in blocks of 16 so
that this cycle asks balanced questions (``PLAN``): presence is half yes, half no; every quadrant slot holds one
lesion and a block's four quadrant slots hold the four quadrants; density slots hold one or two lesions; count
answers are 0, 0, 1, 2. A block holds 4 empty slices, 8 with one lesion and 4 with two: the 1:2:1 mix.

    medsage data lesion-task OUT [--train N] [--eval M] [--seed S]
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from medsage.data_pipeline.questions import QUADRANTS  # the order quadrant questions list them in
from medsage.io import atomic_write_bytes, atomic_write_text

DENSITIES = ["hyperdense", "hypodense"]
PLACEHOLDER = "lesions"  # Roboflow's project-named category every class points to
CATEGORIES = [{"id": 0, "name": PLACEHOLDER, "supercategory": "none"}] + [
    {"id": i + 1, "name": f"{d} lesion", "supercategory": PLACEHOLDER} for i, d in enumerate(DENSITIES)]
TISSUE = (65, 195)  # every tissue grey after shading; lesions lie well outside it, air below it
ORGANS = (75, 110, 145, 180)  # the organ grey of quadrant 0..3 (upper left, upper right, lower left, lower right)
EVAL_SEED_OFFSET = 1_000_003  # the eval set's seed is S + this: no image seed is shared with a train set of seed S


def eval_seed(seed: int) -> int:
    return seed + EVAL_SEED_OFFSET


# Lesions per slice in a block of 16: slot i is kind i % 4 of the question cycle, row i // 4 (see the docstring).
PLAN = [[0, 1, 1, 0],   # presence no, quadrant, density (1 lesion), count 0
        [0, 1, 2, 0],   # presence no, quadrant, density (2 lesions), count 0
        [1, 1, 1, 1],   # presence yes, quadrant, density, count 1
        [2, 1, 2, 2]]   # presence yes, quadrant, density, count 2
BLOCK = sum(len(row) for row in PLAN)


def _layout(n: int, seed: int) -> list[tuple[int, list[int] | None]]:
    """(lesions, fixed quadrants or None) per slice: the PLAN, a seeded quadrant order per block's one-lesion
    column, so its four quadrant slots cover the four quadrants."""
    out = []
    for block in range(0, n, BLOCK):
        order = np.random.default_rng([seed, 0, block]).permutation(4)
        for i in range(block, min(n, block + BLOCK)):
            row, col = divmod(i - block, 4)
            out.append((PLAN[row][col], [int(order[row])] if col == 1 else None))
    return out


def _quadrant_centre(q: int, size: int) -> tuple[float, float]:
    """(x, y) of the centre of quadrant ``q`` (QUADRANTS order) of a ``size`` slice."""
    return (size / 4) * (1 + 2 * (q % 2)), (size / 4) * (1 + 2 * (q // 2))


def _slice(rng: np.random.Generator, size: int, lesions: list[tuple[float, float, float, float]],
           density: str) -> np.ndarray:
    """One 8-bit slice; ``lesions`` are (cx, cy, rx, ry) ellipses in pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    img = np.zeros((size, size), np.float32)  # air
    # Body: a superellipse (CT abdomen-like, a rounded square) of random extent and centre.
    cx, cy = size / 2 + rng.uniform(-3, 3, 2)
    ax, ay = size / 2 - rng.uniform(1, 5), size / 2 - rng.uniform(3, 9)
    power = rng.uniform(2.6, 3.6)
    body = np.abs((xx - cx) / ax) ** power + np.abs((yy - cy) / ay) ** power <= 1
    img[body] = rng.uniform(95, 130)
    # A strong smooth random shading (low-frequency waves) and a few blobs of any tissue grey around the organs: they
    # vary the low DCT block pHash reads, so slices that share the anatomy below are not near-duplicates.
    shade = np.zeros_like(img)
    for _ in range(10):  # up to 3.5 cycles across: the span of pHash's 8x8 block
        fx, fy = rng.uniform(-7, 7, 2) * np.pi / size
        shade += rng.uniform(21, 39) * np.cos(fx * xx + fy * yy + rng.uniform(0, 2 * np.pi))
    for _ in range(16):
        ox, oy = rng.uniform(size * 0.1, size * 0.9, 2)
        rx, ry = rng.uniform(size / 14, size / 5, 2)
        img[(((xx - ox) / rx) ** 2 + ((yy - oy) / ry) ** 2 <= 1) & body] = rng.uniform(*TISSUE)
    # Anatomy: one organ per quadrant, each its own grey band (ORGANS), near the quadrant's centre, so a lesion sits in
    # its quadrant's organ. Qwen2.5-VL's tower has no absolute position embedding (only relative 2-D RoPE), so a
    # random tower can tell where a lesion is only from what surrounds it, as a reader knows the liver. The organs
    # take a fifth of the shading, so their greys stay apart.
    organs = np.zeros_like(body)
    for q, organ_grey in enumerate(ORGANS):
        ox, oy = np.add(_quadrant_centre(q, size), rng.uniform(-size / 12, size / 12, 2))
        rx, ry = rng.uniform(size / 6, size / 4.5, 2)
        angle = rng.uniform(0, np.pi)
        u = (xx - ox) * np.cos(angle) + (yy - oy) * np.sin(angle)
        v = -(xx - ox) * np.sin(angle) + (yy - oy) * np.cos(angle)
        organ = ((u / rx) ** 2 + (v / ry) ** 2 <= 1) & body
        img[organ] = organ_grey + rng.uniform(-8, 8)
        organs |= organ
    shade[organs] *= 0.2
    img[body] = np.clip(img[body] + shade[body], TISSUE[0], TISSUE[1])
    grey = rng.uniform(225, 250) if density == "hyperdense" else rng.uniform(40, 52)  # air is 0
    for lx, ly, rx, ry in lesions:
        img[((xx - lx) / rx) ** 2 + ((yy - ly) / ry) ** 2 <= 1] = grey
    # Soft edges and scanner noise, so no two slices share pixels.
    kernel = np.array([1, 4, 6, 4, 1], np.float32) / 16
    img = np.apply_along_axis(np.convolve, 0, img, kernel, "same")
    img = np.apply_along_axis(np.convolve, 1, img, kernel, "same")
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_item(rng: np.random.Generator, size: int, count: int,
               fixed: list[int] | None) -> tuple[list[int], str, list[tuple]]:
    quadrants = fixed or sorted(int(q) for q in rng.choice(4, size=count, replace=False))
    density = DENSITIES[int(rng.integers(2))]
    lesions = []
    for q in quadrants:
        qx, qy = _quadrant_centre(q, size)
        jx, jy = rng.uniform(-size / 32, size / 32, 2)
        rx, ry = rng.uniform(size / 10, size / 8, 2)
        lesions.append((qx + jx, qy + jy, rx, ry))
    return quadrants, density, lesions


def make_lesion_task(root: str | Path, n: int, seed: int, split: str = "train", size: int = 112) -> dict:
    """Write ``n`` slices as ``root/<split>/`` of a Roboflow COCO export; returns the answers' distribution."""
    folder = Path(root) / split
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    stats = {"images": n, "lesion_count": Counter(), "quadrant": Counter(), "density": Counter()}
    for i, (count, fixed) in enumerate(_layout(n, seed)):
        rng = np.random.default_rng([seed, 1, i])
        quadrants, density, lesions = _draw_item(rng, size, count, fixed)
        tag = hashlib.sha1(f"{seed}/{split}/{i}".encode()).hexdigest()[:12]
        name = f"ct_{i:05d}_png.rf.{tag}.png"
        png = io.BytesIO()
        Image.fromarray(_slice(rng, size, lesions, density)).save(png, "PNG")
        atomic_write_bytes(folder / name, png.getvalue())
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        for lx, ly, rx, ry in lesions:
            x1, y1 = max(0.0, lx - rx), max(0.0, ly - ry)
            x2, y2 = min(float(size), lx + rx), min(float(size), ly + ry)
            bbox = [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)]
            anns.append({"id": len(anns), "image_id": i, "category_id": 1 + DENSITIES.index(density),
                         "bbox": bbox, "area": round(bbox[2] * bbox[3], 1), "iscrowd": 0})
        stats["lesion_count"][str(count)] += 1
        if count:
            stats["density"][density] += 1
        for q in quadrants:
            stats["quadrant"][QUADRANTS[q]] += 1
    coco = {"info": {"description": f"medsage generated lesion task, seed {seed}"}, "licenses": [],
            "categories": CATEGORIES, "images": images, "annotations": anns}
    atomic_write_text(folder / "_annotations.coco.json", json.dumps(coco))
    return {k: dict(sorted(v.items())) if isinstance(v, Counter) else v for k, v in stats.items()}


def write_task(out: str | Path, n_train: int = 400, n_eval: int = 200, seed: int = 0, size: int = 112) -> dict:
    """``out/train`` (split ``train/``, seed S) and ``out/eval`` (split ``test/``, seed S + offset), plus
    ``out/lesion_task.json`` with the answers' distribution of each."""
    out = Path(out)
    summary = {
        "size": size,
        "train": {"root": str(out / "train"), "split": "train", "seed": seed,
                  **make_lesion_task(out / "train", n_train, seed, "train", size)},
        "eval": {"root": str(out / "eval"), "split": "test", "seed": eval_seed(seed),
                 **make_lesion_task(out / "eval", n_eval, eval_seed(seed), "test", size)},
    }
    atomic_write_text(out / "lesion_task.json", json.dumps(summary, indent=2) + "\n")
    return summary
