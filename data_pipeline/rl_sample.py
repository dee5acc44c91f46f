"""SAGE-rl sampling (A.4): a balanced draw from the verified pool to a target size (10k by default).

RL trains on questions, not on trajectories: the pool's RPA trajectories of one record collapse to
one (a seeded pick), so no question is drawn twice. The questions are then split into strata by
``keys`` (question type and modality by default) and the target is shared out evenly: a stratum
smaller than its share gives all it has and the rest is shared again among the others (water
filling). Within a stratum the draw is seeded. Each row keeps its record, so the LVKC stage
segmentation (``trajectory``) travels with it for the format reward.

Written with the RL writers of ``data_pipeline.writers`` (verl parquet, EasyR1 jsonl) plus the
records themselves (``sage_rl.jsonl``, stages included).
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from medsage.data_pipeline import layout
from medsage.records import Sample

DEFAULT_TARGET = 10_000
DEFAULT_KEYS = ("question_type", "modality")


def stratum(sample: Sample, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The stratum of a sample: each key's value (a Sample field, else a metadata entry) or ``unknown``."""
    out = []
    for key in keys:
        value = getattr(sample, key) if hasattr(sample, key) else sample.metadata.get(key)
        out.append(str(value) if value not in (None, "") else "unknown")
    return tuple(out)


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
             prompt: str = "lvkc") -> dict[str, Path]:
    """``<name>.parquet`` (verl), ``<name>.easyr1.jsonl`` (EasyR1), ``<name>.jsonl`` (records with stages)
    and ``<name>.summary.json``; the prompts are ``recipes/prompt/<prompt>`` (a name or a YAML path)."""
    from medsage.data_pipeline.writers import write_easyr1, write_verl_parquet
    from medsage.io import atomic_write_json
    from medsage.prompts import PromptConfig
    from medsage.records import write_records

    files = layout.rl_sample_files(Path(out_dir), name)
    chat = PromptConfig.load(prompt)
    return {
        "verl": write_verl_parquet(chosen, files["verl"], prompt=chat),
        "easyr1": write_easyr1(chosen, files["easyr1"], prompt=chat),
        "records": write_records(files["records"], chosen),
        "summary": atomic_write_json(files["summary"], summary),
    }
