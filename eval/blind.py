"""Blind baseline (``eval.blind=true``): every image replaced by a blank one of the same size.

What a model scores without looking tells how much of a benchmark the question text alone answers
(models are known to score well on VQA-RAD with blank images). The blank image is black RGB at the
original's size, written once per size under the image cache; the item, its prompt and its scoring
are unchanged. Predictions go to ``predictions.blind.jsonl`` beside the sighted ones and the summary
to ``blind_summaries`` in ``run.json``, so ``medsage report`` shows both columns per benchmark.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medsage.records import Sample

FALLBACK_SIZE = (448, 448)  # when an image cannot be opened to read its size


def blank_image(size: tuple[int, int], folder: Path) -> str:
    from PIL import Image

    path = folder / f"blank_{size[0]}x{size[1]}.png"
    if not path.exists():
        import io

        from medsage.io import atomic_write_bytes

        buf = io.BytesIO()
        Image.new("RGB", size, (0, 0, 0)).save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
    return str(path.resolve())


def _size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, ValueError):
        return FALLBACK_SIZE


def blind_samples(samples: list[Sample], folder: Path) -> list[Sample]:
    """Copies of ``samples`` whose every image is a blank one of the same size; ids unchanged."""
    return [dataclasses.replace(s, images=[blank_image(_size(p), folder) for p in s.images],
                                metadata={**s.metadata, "blind": True}) for s in samples]
