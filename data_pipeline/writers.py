"""Writers from records to the files the engines read. Every write is atomic.

- SFT: LLaVA/ShareGPT JSON (``conversations`` with ``from: human|gpt``, ``images``, one ``<image>``
  per image) plus the ``dataset_info.json`` entry that LLaMA-Factory 0.9.5 reads.
"""

from __future__ import annotations

import json
from pathlib import Path

from medsage.io import atomic_write_json
from medsage.records import Sample

IMAGE_PLACEHOLDER = "<image>"


def sft_example(sample: Sample, image_root: Path | None = None) -> dict:
    """One ShareGPT example: the image placeholders, the question, and the rendered trajectory."""
    if sample.trajectory is None:
        raise ValueError(f"sample {sample.id}: has no trajectory to train on")
    if not sample.images:
        raise ValueError(f"sample {sample.id}: has no image")
    question = sample.prompt_text()
    if IMAGE_PLACEHOLDER in question:
        raise ValueError(f"sample {sample.id}: question already contains {IMAGE_PLACEHOLDER!r}")
    images = [str(Path(p).relative_to(image_root)) if image_root and Path(p).is_absolute()
              and Path(p).is_relative_to(image_root) else p for p in sample.images]
    return {
        "id": sample.id,
        "conversations": [
            {"from": "human", "value": IMAGE_PLACEHOLDER * len(images) + question},
            {"from": "gpt", "value": sample.trajectory.render()},
        ],
        "images": images,
    }


def write_llava_sft(samples: list[Sample], dataset_dir: str | Path, name: str = "sage_sft") -> Path:
    """Write ``<dataset_dir>/<name>.json`` and add ``name`` to ``<dataset_dir>/dataset_info.json``.

    Image paths under ``dataset_dir`` are written relative to it (LLaMA-Factory's media_dir default).
    """
    dataset_dir = Path(dataset_dir).resolve()
    examples = [sft_example(s, dataset_dir) for s in samples if s.kept]
    data_file = atomic_write_json(dataset_dir / f"{name}.json", examples)
    info_path = dataset_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {
        "file_name": data_file.name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"},
    }
    atomic_write_json(info_path, info)
    return data_file
