"""SAGE-rl sampling (A.4): a balanced draw from the verified pool to a target size (10k by default).

RL trains on questions, not on trajectories: the pool's RPA trajectories of one record collapse to
one (a seeded pick), so no question is drawn twice. The questions are then split into strata by
``keys`` (question type and modality by default) and the target is shared out evenly: a stratum
smaller than its share gives all it has and the rest is shared again among the others (water
filling). Within a stratum the draw is seeded. Each row keeps its record, so the LVKC stage
segmentation (``trajectory``) travels with it for the format reward.

Before the draw, every question whose prompt is longer than the RL recipe's ``max_prompt_length`` is
set aside with its reason (``<name>.rejected.jsonl``): verl's ``filter_overlong_prompts`` would drop it
at start-up with no more than a count printed. Images are counted as the model sees them, resized into
the model recipe's pixel bounds (the bounds SFT uses, written into every verl row). With the model's
processor (``--model-path``) the whole prompt is counted as verl counts it
(``medsage.plugins.engines.verl_data``); without it, the images alone, and ``medsage rl`` counts the rest.

Written with the RL writers of ``data_pipeline.writers`` (verl parquet, EasyR1 jsonl) plus the
records themselves (``sage_rl.jsonl``, stages included).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from medsage.data_pipeline import layout
from medsage.images import PixelBounds
from medsage.records import Sample

DEFAULT_TARGET = 10_000
DEFAULT_KEYS = ("question_type", "modality")


@dataclass(frozen=True)
class PromptBudget:
    """What an RL prompt may hold: images resized into ``pixels``, at most ``max_prompt_tokens`` in all."""

    pixels: PixelBounds
    max_prompt_tokens: int


def rl_budget(model: str | None = None, max_prompt_tokens: int | None = None) -> PromptBudget:
    """The pixel bounds of ``recipes/model/<model>.yaml`` (the RL recipe's default model when None) and the
    RL recipe's ``max_prompt_length`` (unless given): the values ``medsage rl`` and SFT use."""
    from medsage.recipes import compose

    cfg = compose("rl", [f"model={model}"] if model else [])
    return PromptBudget(PixelBounds(int(cfg.model.image_min_pixels), int(cfg.model.image_max_pixels)),
                        int(max_prompt_tokens or cfg.rl.max_prompt_length))


def within_budget(pool: list[Sample], budget: PromptBudget, prompt=None,
                  counter=None) -> tuple[list[Sample], list[dict]]:
    """The pool's samples whose prompt fits the budget, and one reason row per sample that does not.

    ``counter`` (a ``verl_data.PromptCounter`` for the model's processor) counts each row's whole prompt,
    rendered with ``prompt`` (a ``PromptConfig``); without it only the images are counted."""
    from medsage.data_pipeline.writers import verl_row
    from medsage.images import image_size, vision_tokens

    sizes: dict[str, tuple[int, int] | str] = {}
    fits, rejected = [], []
    for s in pool:
        image_tokens, unreadable = [], None
        for path in s.images:
            if path not in sizes:
                try:
                    sizes[path] = image_size(path)
                except (OSError, ValueError) as err:
                    sizes[path] = f"{type(err).__name__}: {err}"
            if isinstance(sizes[path], str):
                unreadable = f"{path}: {sizes[path]}"
                break
            image_tokens.append(vision_tokens(*sizes[path], budget.pixels))
        row = {"id": s.id, "images": list(s.images), "max_prompt_length": budget.max_prompt_tokens,
               "min_pixels": budget.pixels.min_pixels, "max_pixels": budget.pixels.max_pixels}
        if unreadable is not None:
            rejected.append({**row, "reason": "unreadable-image", "detail": unreadable})
            continue
        if counter is not None:
            length = counter.length(0, verl_row(s, 0, prompt, pixels=budget.pixels))
            text, image_tokens = length.text_tokens, length.image_tokens
        tokens = sum(image_tokens) + (text if counter is not None else 0)
        if tokens <= budget.max_prompt_tokens:
            fits.append(s)
            continue
        what = f"{text} text + {sum(image_tokens)} image tokens" if counter is not None else \
            f"its images alone take {sum(image_tokens)} tokens"
        rejected.append({**row, "reason": "prompt-over-limit" if counter is not None else "image-tokens-over-prompt-limit",
                         "prompt_tokens": tokens, "image_tokens": sum(image_tokens),
                         "detail": f"{what} at these pixel bounds, over max_prompt_length: verl's "
                                   "filter_overlong_prompts would drop it"})
    return fits, rejected


def rejected_summary(rejected: list[dict], budget: PromptBudget, counted: str) -> dict:
    return {"max_prompt_length": budget.max_prompt_tokens, "min_pixels": budget.pixels.min_pixels,
            "max_pixels": budget.pixels.max_pixels, "counted": counted, "rejected": len(rejected),
            "by_reason": dict(Counter(r["reason"] for r in rejected))}


def stratum(sample: Sample, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The stratum of a sample: each key's value (a Sample field, else a metadata entry) or ``unknown``."""
    out = []
    for key in keys:
        value = getattr(sample, key) if hasattr(sample, key) else sample.metadata.get(key)
        out.append(str(value) if value not in (None, "") else "unknown")
    return tuple(out)


def only(pool: list[Sample], key: str, values: set[str]) -> list[Sample]:
    """The samples whose ``key`` (as ``stratum`` reads it) is one of ``values``: RL on the kinds SFT left a gap on.
    Raises ValueError naming the values present when none matches."""
    kept = [s for s in pool if stratum(s, (key,))[0] in values]
    if pool and not kept:
        present = sorted({stratum(s, (key,))[0] for s in pool})
        raise ValueError(f"--only {key}={','.join(sorted(values))}: no question has it; {key} values present: "
                         f"{', '.join(present)}")
    return kept


def allocate(sizes: dict[tuple, int], target: int, rng: random.Random) -> dict[tuple, int]:
    """Share ``target`` evenly over strata, never more than a stratum has (water filling)."""
    alloc = {k: 0 for k in sizes}
    remaining = min(target, sum(sizes.values()))
    open_ = sorted(k for k in sizes if sizes[k] > 0)
    while remaining > 0 and open_:
        share = remaining // len(open_)
        if share == 0:  # fewer items left than strata: one each to a seeded choice of strata
            for k in rng.sample(open_, remaining):
                alloc[k] += 1
            break
        for k in open_:
            take = min(share, sizes[k] - alloc[k])
            alloc[k] += take
            remaining -= take
        open_ = [k for k in open_ if alloc[k] < sizes[k]]
    return alloc


def one_per_record(pool: list[Sample], seed: int = 0) -> list[Sample]:
    """One trajectory per source record (RPA writes several), picked with a seed; pool order kept."""
    by_record: dict[str, list[Sample]] = defaultdict(list)
    for s in pool:
        by_record[(s.metadata.get("synth") or {}).get("record_id", s.id)].append(s)
    picked = {id(random.Random(f"{seed}:{rid}").choice(group)) for rid, group in by_record.items()}
    return [s for s in pool if id(s) in picked]


def balanced_sample(pool: list[Sample], target: int = DEFAULT_TARGET, keys: tuple[str, ...] = DEFAULT_KEYS,
                    seed: int = 0) -> tuple[list[Sample], dict]:
    """The balanced draw and a summary (per stratum: available and chosen; and any shortfall)."""
    if target < 1:
        raise ValueError(f"target must be >= 1, got {target}")
    if bad := [s.id for s in pool if s.trajectory is None or not s.kept]:
        raise ValueError(f"the RL pool must hold kept records with trajectories; {len(bad)} do not, e.g. {bad[0]!r}")
    questions = one_per_record(pool, seed)
    groups: dict[tuple, list[Sample]] = defaultdict(list)
    for s in questions:
        groups[stratum(s, keys)].append(s)
    rng = random.Random(seed)
    alloc = allocate({k: len(v) for k, v in groups.items()}, target, rng)
    chosen: list[Sample] = []
    for k in sorted(groups):
        chosen += random.Random(f"{seed}:{'/'.join(k)}").sample(groups[k], alloc[k])
    rng.shuffle(chosen)  # strata interleaved, so a truncated read is still balanced
    summary = {
        "keys": list(keys), "target": target, "pool_trajectories": len(pool), "pool_questions": len(questions),
        "chosen": len(chosen), "shortfall": max(0, target - len(chosen)),
        "strata": {"/".join(k): {"available": len(groups[k]), "chosen": alloc[k]} for k in sorted(groups)},
    }
    return chosen, summary


def write_rl(chosen: list[Sample], out_dir: str | Path, summary: dict, name: str = layout.RL_SAMPLE,
             prompt: str = "lvkc", budget: PromptBudget | None = None,
             rejected: list[dict] = (), counted: str = "images") -> dict[str, Path]:
    """``<name>.parquet`` (verl, images with ``budget``'s pixel bounds), ``<name>.easyr1.jsonl`` (EasyR1),
    ``<name>.jsonl`` (records with stages), ``<name>.rejected.jsonl`` (what did not fit the budget, and why)
    and ``<name>.summary.json``; the prompts are ``recipes/prompt/<prompt>`` (a name or a YAML path)."""
    from medsage.data_pipeline.writers import write_easyr1, write_verl_parquet
    from medsage.io import atomic_write_json, atomic_write_jsonl
    from medsage.prompts import PromptConfig
    from medsage.records import write_records

    files = layout.rl_sample_files(Path(out_dir), name)
    chat = PromptConfig.load(prompt)
    if budget is not None:
        summary = {**summary, "prompt_budget": {**rejected_summary(list(rejected), budget, counted),
                                                "file": str(files["rejected"])}}
    return {
        "rejected": atomic_write_jsonl(files["rejected"], list(rejected)),
        "verl": write_verl_parquet(chosen, files["verl"], prompt=chat, pixels=budget.pixels if budget else None),
        "easyr1": write_easyr1(chosen, files["easyr1"], prompt=chat),
        "records": write_records(files["records"], chosen),
        "summary": atomic_write_json(files["summary"], summary),
    }
