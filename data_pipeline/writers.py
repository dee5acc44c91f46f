"""Writers from records to the files the engines read. Every write is atomic.

- SFT: LLaVA/ShareGPT JSON (``conversations`` with ``from: human|gpt``, ``images``, one ``<image>``
  per image) plus the ``dataset_info.json`` entry that LLaMA-Factory 0.9.5 reads; retry rows
  (``synthesis/retry.py``) have four turns, trained on the last one only (``mask_history``).

Every writer takes the ``medsage.prompts.PromptConfig`` of ``recipes/prompt/`` (``lvkc`` by default) and
renders the human turn with it, the same prompt evaluation sends (paper Figure 6).
- RL for verl: parquet rows that verl 0.9.1's ``RLHFDataset`` reads (schema in ``verl_row``).
- RL for EasyR1: jsonl or parquet with configurable prompt/answer/images keys (``easyr1_row``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Literal

from medsage.images import PixelBounds
from medsage.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl
from medsage.prompts import PromptConfig, human_turn
from medsage.data_pipeline.synthesis.retry import RETRY_KEY
from medsage.records import Sample
from medsage.scaffold import Trajectory, render_revision
from medsage.vocab import IMAGE_PLACEHOLDER

__all__ = ["IMAGE_PLACEHOLDER", "sft_example", "write_llava_sft", "verl_row", "easyr1_row", "rl_options",
           "write_verl_parquet", "write_easyr1"]


def sft_example(sample: Sample, prompt: PromptConfig, image_root: Path | None = None) -> dict:
    """One ShareGPT example: the human turn of ``prompt`` and the rendered trajectory.

    A retry row (``metadata["retry"]``, ``synthesis/retry.py``) has four turns, as the RL self-check loop
    builds them: the question, the wrong τ1, the self-check request, then ``<CHECK> c</CHECK>`` and τ2.
    """
    if sample.trajectory is None:
        raise ValueError(f"sample {sample.id}: has no trajectory to train on")
    images = [str(Path(p).relative_to(image_root)) if image_root and Path(p).is_absolute()
              and Path(p).is_relative_to(image_root) else p for p in sample.images]
    answer = sample.trajectory.render()
    retry = sample.metadata.get(RETRY_KEY)
    turns = [{"from": "human", "value": human_turn(sample, prompt)}]
    if retry:
        turns += [{"from": "gpt", "value": Trajectory.from_dict(retry["first"]).render()},
                  {"from": "human", "value": retry["request"]}]
        answer = render_revision(retry["check"], answer)
    return {
        "id": sample.id,
        "conversations": [
            *([{"from": "system", "value": prompt.system}] if prompt.system else []),
            *turns,
            {"from": "gpt", "value": answer},
        ],
        "images": images,
    }


def write_llava_sft(samples: list[Sample], dataset_dir: str | Path, name: str = "sage_sft",
                    prompt: PromptConfig | None = None, note: str | None = None) -> Path:
    """Write ``<dataset_dir>/<name>.json`` and add ``name`` to ``<dataset_dir>/dataset_info.json``.

    Image paths under ``dataset_dir`` are written relative to it (LLaMA-Factory's media_dir default).
    ``prompt`` defaults to ``recipes/prompt/lvkc.yaml``; ``note`` (e.g. "offline templates: not the paper's
    data") rides in the entry as ``medsage_note``, which LLaMA-Factory ignores and the SFT stage hashes.
    """
    prompt = prompt or PromptConfig.load()
    dataset_dir = Path(dataset_dir).resolve()
    examples = [sft_example(s, prompt, dataset_dir) for s in samples if s.kept]
    data_file = atomic_write_json(dataset_dir / f"{name}.json", examples)
    info_path = dataset_dir / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info[name] = {
        "file_name": data_file.name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"},
        **({"medsage_note": note} if note else {}),
    }
    atomic_write_json(info_path, info)
    return data_file


# --------------------------------------------------------------------------------------------
# RL rows
# --------------------------------------------------------------------------------------------


def _image_entry(path: str, embed: bool, pixels: PixelBounds | None = None) -> dict:
    entry = {"bytes": Path(path).read_bytes()} if embed else {"image": path}
    if pixels is not None:  # the keys qwen-vl-utils (verl's image loader) resizes by
        entry.update(min_pixels=pixels.min_pixels, max_pixels=pixels.max_pixels)
    return entry


def verl_row(sample: Sample, index: int, prompt: PromptConfig, *, embed_images: bool = False,
             pixels: PixelBounds | None = None) -> dict:
    """One verl RL row. Schema (what the RL stage's reward reads back):

    - ``data_source``: the record's source (deeplesion, roboflow_coco, ...);
    - ``prompt``: chat list ``[{"role": "system", ...}?, {"role": "user", "content": "<image>\\n..."}]``,
      the human turn of ``prompt`` (``medsage.prompts.human_turn``: one ``<image>`` per image, a newline,
      the question, its options as ``A. text`` lines, the instruction), as in SFT and evaluation;
    - ``images``: ``[{"image": absolute path}]`` or, with ``embed_images``, ``[{"bytes": ...}]``
      (verl's ``RLHFDataset._build_messages`` accepts both), with ``min_pixels`` / ``max_pixels`` when
      ``pixels`` is given: the model recipe's bounds, which SFT resizes by too (without them qwen-vl-utils
      lets one image take up to 16,384 tokens);
    - ``ability``: ``"medical_vqa"``;
    - ``reward_model``: ``{"style": "rule", "ground_truth": answer}``; the answer string exactly as the
      record holds it (``yes``/``no``; an option letter; the open answer text);
    - ``extra_info``: ``{"id", "index", "question_type" (closed|choice|open), "options", "modality",
      "question", "reference"}``; the question text is what the trajectory scorer reads beside the response,
      ``reference`` the record's own trajectory segmented into its stages (``{loc, vis, know, con, answer}``,
      null for a record without one), against which the format reward checks each stage's key information (A.4).
      ``options`` is letter -> text for choice questions and null otherwise; parquet stores it as a
      struct over every letter used in the file, so letters a row does not have read back as None:
      use ``rl_options(extra_info)`` to get the plain dict back.
    """
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    messages.append({"role": "user", "content": human_turn(sample, prompt)})
    return {
        "data_source": sample.source,
        "prompt": messages,
        "images": [_image_entry(p, embed_images, pixels) for p in sample.images],
        "ability": "medical_vqa",
        "reward_model": {"style": "rule", "ground_truth": sample.answer},
        "extra_info": {"id": sample.id, "index": index, "question_type": sample.question_type,
                       "options": dict(sample.options) if sample.options else None, "modality": sample.modality,
                       "question": sample.prompt_text(), "reference": reference_stages(sample)},
    }


def reference_stages(sample: Sample) -> dict[str, str] | None:
    """The record's trajectory as its LVKC stages and answer, the format reward's reference (A.4)."""
    return {k: v for k, v in sample.trajectory.to_dict().items() if k != "preamble"} if sample.trajectory else None


def rl_options(extra_info: dict) -> dict[str, str] | None:
    """The options of an RL row as written: drops the None letters parquet adds, accepts JSON text."""
    options = (extra_info or {}).get("options")
    if isinstance(options, str):
        options = json.loads(options) if options.strip() else None
    if not options:
        return None
    return {k: v for k, v in sorted(options.items()) if v is not None}


def easyr1_answer(sample: Sample) -> str:
    """The EasyR1 answer cell: JSON ``{"answer", "question_type", "options", "reference"}``.

    EasyR1 hands its reward function only the response and this cell (as ``ground_truth``), so the
    question type, options and reference stages travel inside it: a choice answer "B. Liver" is then judged against
    the options as verl judges it, not as open text. ``read_easyr1_answer`` reads it back.
    """
    return json.dumps({"answer": sample.answer, "question_type": sample.question_type,
                       "options": dict(sample.options) if sample.options else None,
                       "reference": reference_stages(sample)}, ensure_ascii=False, sort_keys=True)


def read_easyr1_answer(cell) -> tuple[str, dict]:
    """``(answer, extra_info)`` from an EasyR1 answer cell; a plain answer (a file written before the
    JSON cell) gives an empty extra_info."""
    if isinstance(cell, str) and cell.lstrip().startswith("{"):
        try:
            payload = json.loads(cell)
        except json.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and "answer" in payload:
            extra = {"question_type": payload.get("question_type"), "options": rl_options(payload),
                     "reference": payload.get("reference")}
            return str(payload["answer"]), {k: v for k, v in extra.items() if v is not None}
    return str(cell), {}


def easyr1_row(sample: Sample, prompt: PromptConfig, *, prompt_key: str = "problem", answer_key: str = "answer",
               image_key: str = "images", embed_images: bool = False) -> dict:
    """One EasyR1 row: ``{prompt_key: human turn, answer_key: easyr1_answer(...), image_key: [paths]}``.

    EasyR1's dataset splits the prompt on ``<image>`` and pairs each with the next image (a path or
    ``{"bytes": ...}``). ``id``, ``question_type`` and ``options`` ride along for traceability.
    """
    images = [_image_entry(p, True) for p in sample.images] if embed_images else list(sample.images)
    return {prompt_key: human_turn(sample, prompt), answer_key: easyr1_answer(sample), image_key: images, "id": sample.id,
            "question_type": sample.question_type, "options": dict(sample.options) if sample.options else None}


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError(f"{path}: no rows to write (no kept record)")
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return atomic_write_bytes(path, buf.getvalue())


def write_verl_parquet(samples: list[Sample], path: str | Path, *, prompt: PromptConfig | None = None,
                       embed_images: bool = False, pixels: PixelBounds | None = None) -> Path:
    """Kept samples as one verl parquet file (schema in ``verl_row``); ``prompt`` defaults to lvkc."""
    prompt = prompt or PromptConfig.load()
    rows = [verl_row(s, i, prompt, embed_images=embed_images, pixels=pixels)
            for i, s in enumerate(s for s in samples if s.kept)]
    return _write_parquet(Path(path), rows)


def write_easyr1(samples: list[Sample], path: str | Path, *, fmt: Literal["jsonl", "parquet"] = "jsonl",
                 prompt: PromptConfig | None = None, prompt_key: str = "problem", answer_key: str = "answer",
                 image_key: str = "images", embed_images: bool = False) -> Path:
    """Kept samples as one EasyR1 file, jsonl or parquet (keys configurable, see ``easyr1_row``)."""
    prompt = prompt or PromptConfig.load()
    if fmt == "jsonl" and embed_images:
        raise ValueError("embed_images needs fmt='parquet' (JSON cannot hold raw bytes)")
    rows = [easyr1_row(s, prompt, prompt_key=prompt_key, answer_key=answer_key, image_key=image_key,
                       embed_images=embed_images) for s in samples if s.kept]
    if fmt == "parquet":
        return _write_parquet(Path(path), rows)
    if fmt != "jsonl":
        raise ValueError(f"EasyR1 format must be jsonl or parquet, got {fmt!r}")
    return atomic_write_jsonl(path, rows)
