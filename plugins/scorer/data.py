"""The scorer's training data: positives from kept trajectories, negatives from rejected and generated ones.

On disk (``medsage data synth run``, data_pipeline/synthesis/run.py):
- ``kept.jsonl``: one record per trajectory that passed verification -> a positive. Its
  ``metadata.synth.failed_attempts`` are the drafts of the same unit that failed first, each a
  rendered trajectory with its reasons -> negatives of the same question, the hardest there are.
- ``rejected.jsonl``: units that never passed -> their failed attempts are negatives. A rejected
  record's own ``trajectory`` is NOT used: records dropped as duplicates or by the per-image cap
  were good trajectories, and an upstream rejection never had one.

Generated hard negatives (``negatives.make_negatives``) come from the positives. Every example
keeps a ``group``: the source record it came from, so the held-out split never puts a record's
positive on one side and its negatives (or its RPA siblings) on the other.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from medsage.plugins.scorer.negatives import RULES, make_negatives

from medsage.records import Sample, read_records
from medsage.scaffold import Trajectory, parse_lenient

POSITIVE = "positive"
REJECTED_PREFIX = "rejected:"  # kind of a verification failure: "rejected:<reason code>"


@dataclass
class Example:
    """One (question, trajectory) pair with its label and how it was made."""

    question: str          # the question as the model saw it, options listed (Sample.prompt_text)
    trajectory: Trajectory
    label: int             # 1: a kept trajectory, 0: a negative
    kind: str              # "positive", a rule of negatives.RULES, or "rejected:<reason code>"
    group: str             # the source record; the split and the contrastive groups follow it
    source_id: str         # the record (or unit) the trajectory belongs to
    detail: dict = field(default_factory=dict)  # how a negative was made


def question_text(question: str, options: dict[str, str] | None) -> str:
    """The question the way ``Sample.prompt_text`` writes it, for callers that have no Sample (the
    reward's RewardInput); calling the one implementation keeps training and scoring identical."""
    return Sample.prompt_text(SimpleNamespace(question=question or "", options=options))


def _group(s: Sample) -> str:
    synth = s.metadata.get("synth") if isinstance(s.metadata, dict) else None
    return str(synth.get("record_id") or s.id) if isinstance(synth, dict) else s.id


def _failed_attempts(s: Sample) -> list[Example]:
    synth = s.metadata.get("synth") if isinstance(s.metadata, dict) else None
    out = []
    for i, attempt in enumerate((synth or {}).get("failed_attempts") or []):
        text = attempt.get("trajectory") if isinstance(attempt, dict) else None
        if not text:
            continue  # the synthesizer failed before writing a trajectory
        reasons = [str(r) for r in attempt.get("reasons") or []]
        code = reasons[0].split(":", 1)[0] if reasons else "unknown"
        out.append(Example(question_text(s.question, s.options), parse_lenient(text), 0, REJECTED_PREFIX + code,
                           _group(s), s.id, {"attempt": i, "reasons": reasons}))
    return out


def examples_from_samples(kept: list[Sample], rejected: list[Sample] = (), *, rules: tuple[str, ...] = RULES,
                          per_rule: int = 1, seed: int = 0) -> list[Example]:
    """Positives, their failed attempts, rejected units' attempts, and generated negatives of ``rules``."""
    positives = [s for s in kept if s.kept and s.trajectory is not None and s.trajectory.complete]
    by_id = {s.id: s for s in positives}
    out = [Example(question_text(s.question, s.options), s.trajectory, 1, POSITIVE, _group(s), s.id)
           for s in positives]
    for s in [*kept, *rejected]:
        out += _failed_attempts(s)
    for neg in make_negatives(positives, rules, per_rule=per_rule, seed=seed):
        s = by_id[neg.source_id]
        out.append(Example(question_text(s.question, s.options), neg.trajectory, 0, neg.kind, _group(s), s.id,
                           neg.detail))
    return out


def load_examples(kept: list[str | Path], rejected: list[str | Path] = (), **kwargs) -> list[Example]:
    """``examples_from_samples`` over JSON-lines files (``kept.jsonl``, ``rejected.jsonl``)."""
    kept_samples = [s for p in kept for s in read_records(p)]
    rejected_samples = [s for p in rejected for s in read_records(p)]
    return examples_from_samples(kept_samples, rejected_samples, **kwargs)


def in_heldout(group: str, fraction: float, seed: int) -> bool:
    """A group's side of the split from a hash of (seed, group): stable across runs, files and machines,
    so ``scorer eval --split heldout`` finds the same held-out records that training set aside."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out) by group."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    train = [e for e in examples if not in_heldout(e.group, fraction, seed)]
    held = [e for e in examples if in_heldout(e.group, fraction, seed)]
    return train, held


def summarize(examples: list[Example]) -> dict[str, int]:
    """Examples per kind, positives first."""
    counts = Counter(e.kind for e in examples)
    return {k: counts[k] for k in sorted(counts, key=lambda k: (k != POSITIVE, k))}
