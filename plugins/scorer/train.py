"""Contrastive training and per-kind evaluation of the trajectory quality scorer.

``run_train`` reads kept/rejected records, makes the hard negatives, splits by source record,
trains, evaluates on the held-out records and saves a checkpoint whose manifest carries the
config, the data counts, the split and the metrics. ``evaluate`` reports, per negative kind,
AUROC against the held-out positives, accuracy at the 0.5 threshold, and the pairwise win rate of
each positive over the negatives made from it.

The objective (per step, a few positives each with up to ``negatives_per_positive`` negatives):
    loss = InfoNCE(pos vs its negatives; temperature) + bce_weight * balanced BCE(all items)
InfoNCE is the contrastive part the paper names (A.4); the BCE term puts 0.5 where kept and
rejected meet, so the score means the same thing from one checkpoint to the next.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from medsage.plugins.scorer.data import POSITIVE, REJECTED_PREFIX, Example, load_examples, split, summarize
from medsage.plugins.scorer.model import DEFAULT_BACKBONE, ScorerModel, trajectory_text
from medsage.plugins.scorer.negatives import RULES

if TYPE_CHECKING:
    import torch


@dataclass
class TrainConfig:
    """Everything a run needs besides its data; mirrors recipes/scorer/*.yaml."""

    backbone: str = DEFAULT_BACKBONE  # folder, hub id, or pkg:<module> with get_model_path()
    max_length: int = 256             # tokens of question + trajectory; longer pairs are truncated
    epochs: int = 8
    batch_positives: int = 8          # positives per step, each with its negatives
    negatives_per_positive: int = 5   # negatives drawn per positive per epoch (fresh draw each epoch)
    head_dim: int = 128               # width the head projects the token states to
    head_layers: int = 1              # transformer layers of the head over the token states (0: pooling only)
    dropout: float = 0.1              # dropout inside the head
    finetune_encoder: bool = False    # train the encoder too (GPU); False caches its states (CPU-friendly)
    lr: float = 2e-5                  # encoder learning rate (finetune_encoder only)
    head_lr: float = 1e-3             # head learning rate (it starts from scratch)
    weight_decay: float = 0.01
    temperature: float = 1.0          # InfoNCE temperature on the logits
    bce_weight: float = 1.0           # weight of the balanced binary term
    rules: list[str] = field(default_factory=lambda: list(RULES))  # generated negative kinds
    per_rule: int = 1                 # generated negatives per rule per positive
    heldout_fraction: float = 0.2     # share of source records held out for evaluation
    seed: int = 0
    device: str = "auto"              # auto | cpu | cuda[:N]
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_positives < 1 or self.negatives_per_positive < 1:
            raise ValueError("epochs, batch_positives and negatives_per_positive must be >= 1")
        if self.temperature <= 0 or self.bce_weight < 0:
            raise ValueError("temperature must be > 0 and bce_weight >= 0")
        unknown = sorted(set(self.rules) - set(RULES))
        if unknown:
            raise ValueError(f"unknown negative rule(s) {unknown}; available: {', '.join(RULES)}")


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float | None:
    """Probability that a random positive outscores a random negative (ties count half); None without both."""
    if not pos or not neg:
        return None
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        avg = (i + 1 + j) / 2
        rank_sum += avg * sum(label for _, label in ranked[i:j])
        i = j
    n_pos, n_neg = len(pos), len(neg)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def evaluate(examples: list[Example], scores: Sequence[float], threshold: float = 0.5) -> dict[str, dict]:
    """Per kind: n, AUROC vs all positives, accuracy at ``threshold`` on positives + that kind, pairwise
    win rate of a positive over its own negatives. Also pooled ``rule_made``, ``rejected`` and ``all``."""
    pos = [s for e, s in zip(examples, scores) if e.label == 1]
    pos_by_source = defaultdict(list)
    for e, s in zip(examples, scores):
        if e.label == 1:
            pos_by_source[e.source_id].append(s)
    kinds: dict[str, list[tuple[Example, float]]] = defaultdict(list)
    for e, s in zip(examples, scores):
        if e.label == 0:
            kinds[e.kind].append((e, s))
            kinds["all"].append((e, s))
            if e.kind in RULES:
                kinds["rule_made"].append((e, s))
            elif e.kind.startswith(REJECTED_PREFIX):
                kinds["rejected"].append((e, s))
    report: dict[str, dict] = {POSITIVE: {"n": len(pos), "accuracy": _mean([s >= threshold for s in pos]),
                                          "mean_score": _mean(pos)}}
    for kind in sorted(kinds, key=lambda k: (k in ("rule_made", "rejected", "all"), k)):
        negs = [s for _, s in kinds[kind]]
        wins = [float(p > s) + 0.5 * float(p == s) for e, s in kinds[kind] for p in pos_by_source.get(e.source_id, [])]
        correct = [p >= threshold for p in pos] + [s < threshold for s in negs]
        report[kind] = {"n": len(negs), "auroc": auroc(pos, negs), "accuracy": _mean(correct),
                        "pairwise": _mean(wins), "mean_score": _mean(negs)}
    return report


def _mean(xs: Sequence[float]) -> float | None:
    return float(sum(xs)) / len(xs) if xs else None  # None, not NaN: the manifest stays strict JSON


def score_examples(model: ScorerModel, examples: list[Example], batch_size: int = 64, progress: bool = False,
                   cache: dict | None = None) -> list[float]:
    """Scores in example order; with a ``cache`` of frozen-encoder states (``cache_states``) only the head runs."""
    if cache is None:
        return model.score([e.question for e in examples], [e.trajectory for e in examples], batch_size, progress)
    import torch

    model.eval()
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            out += torch.sigmoid(model.head(*_from_cache(cache, examples[i:i + batch_size]))).tolist()
    return out


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class _Unit:
    """One contrastive group of a step: a positive (None for rejected units that never got one) and negatives."""

    positive: Example | None
    negatives: list[Example]


def _units(train: list[Example], k: int, rng: random.Random) -> list[_Unit]:
    """This epoch's units: each positive with up to ``k`` negatives of its own record (its own source
    first: the negatives made from it and its failed drafts), and leftover negatives in chunks."""
    negs_by_group: dict[str, list[Example]] = defaultdict(list)
    for e in train:
        if e.label == 0:
            negs_by_group[e.group].append(e)
    used: set[int] = set()
    units = []
    for e in train:
        if e.label != 1:
            continue
        candidates = negs_by_group.get(e.group, [])
        own = [n for n in candidates if n.source_id == e.source_id]
        rest = [n for n in candidates if n.source_id != e.source_id]
        rng.shuffle(own)
        rng.shuffle(rest)
        chosen = (own + rest)[:k]
        used.update(id(n) for n in chosen)
        units.append(_Unit(e, chosen))  # without negatives it still counts in the binary term
    leftover = [e for e in train if e.label == 0 and id(e) not in used]
    rng.shuffle(leftover)
    units += [_Unit(None, leftover[i:i + k]) for i in range(0, len(leftover), k)]
    rng.shuffle(units)
    return units


def _loss(logits, units: list[_Unit], cfg: TrainConfig):
    import torch
    import torch.nn.functional as F

    labels, nce_terms, offset = [], [], 0
    for u in units:
        n = len(u.negatives) + (u.positive is not None)
        if u.positive is not None:  # the positive sits first in its unit
            nce_terms.append(F.cross_entropy((logits[offset:offset + n] / cfg.temperature).unsqueeze(0),
                                             torch.zeros(1, dtype=torch.long, device=logits.device)))
            labels.append(1.0)
        labels += [0.0] * len(u.negatives)
        offset += n
    y = torch.tensor(labels, device=logits.device)
    per_item = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    # Balanced: positives and negatives weigh the same however many negatives a positive has.
    bce = sum(per_item[y == c].mean() for c in (0.0, 1.0) if (y == c).any()) / 2
    nce = torch.stack(nce_terms).mean() if nce_terms else logits.sum() * 0.0
    return nce + cfg.bce_weight * bce, float(nce.detach()), float(bce.detach())


def cache_states(model: ScorerModel, examples: list[Example], batch_size: int) -> dict[int, torch.Tensor]:
    """A frozen encoder gives the same token states every epoch: compute them once, unpadded."""
    import torch
    from tqdm import tqdm

    texts = {id(e): trajectory_text(e.trajectory) for e in examples}
    order = sorted(examples, key=lambda e: len(e.question) + len(texts[id(e)]))
    cache = {}
    model.eval()
    with torch.inference_mode():
        for i in tqdm(range(0, len(order), batch_size), desc="encoding", unit="batch"):
            chunk = order[i:i + batch_size]
            states, mask = model.token_states([e.question for e in chunk], [texts[id(e)] for e in chunk])
            for e, st, m in zip(chunk, states, mask):
                cache[id(e)] = st[: int(m.sum())].clone()
    return cache


def _from_cache(cache: dict[int, torch.Tensor], items: list[Example]):
    import torch
    from torch.nn.utils.rnn import pad_sequence

    states = [cache[id(x)] for x in items]
    mask = pad_sequence([torch.ones(len(st), dtype=torch.long, device=st.device) for st in states], batch_first=True)
    return pad_sequence(states, batch_first=True), mask


def train_model(model: ScorerModel, train: list[Example], cfg: TrainConfig,
                on_step: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place; returns the per-epoch loss log."""
    import torch
    from tqdm import tqdm

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    cache = None if cfg.finetune_encoder else cache_states(model, train, cfg.eval_batch_size)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.head_lr}]
    if cfg.finetune_encoder:
        groups.append({"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    # Steps per epoch vary a little (leftover negatives are chunked); a preview plus slack sizes the schedule.
    steps_per_epoch = -(-len(_units(train, cfg.negatives_per_positive, random.Random(cfg.seed))) // cfg.batch_positives)
    total = max(1, int(cfg.epochs * steps_per_epoch * 1.1))
    # Linear warm-up over the first 10% then linear decay: stable on small data sets.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / max(1, total // 10)) * max(0.0, 1 - step / total))
    log = []
    model.train()
    bar = tqdm(total=cfg.epochs, desc="scorer training", unit="epoch")
    for epoch in range(cfg.epochs):
        units = _units(train, cfg.negatives_per_positive, rng)
        batches = [units[i:i + cfg.batch_positives] for i in range(0, len(units), cfg.batch_positives)]
        sums = {"loss": 0.0, "nce": 0.0, "bce": 0.0}
        for batch in batches:
            items = [x for u in batch for x in ([u.positive] if u.positive else []) + u.negatives]
            if cache is None:
                logits = model.logits([x.question for x in items], [trajectory_text(x.trajectory) for x in items])
            else:
                logits = model.head(*_from_cache(cache, items))
            loss, nce, bce = _loss(logits, batch, cfg)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
            opt.step()
            sched.step()
            sums["loss"] += float(loss.detach())
            sums["nce"] += nce
            sums["bce"] += bce
            if on_step:
                on_step({"epoch": epoch, "loss": float(loss.detach())})
        log.append({"epoch": epoch + 1, **{k: round(v / max(1, len(batches)), 4) for k, v in sums.items()}})
        bar.set_postfix(loss=log[-1]["loss"])
        bar.update(1)
    bar.close()
    model.eval()
    return log


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, dict]
    counts: dict[str, dict[str, int]]
    log: list[dict]
    seconds: float


def run_train(kept: list[str | Path], rejected: list[str | Path], out: str | Path, cfg: TrainConfig) -> TrainResult:
    """Data -> split -> train -> held-out metrics -> checkpoint with manifest (see module docstring)."""
    started = time.monotonic()
    examples = load_examples(kept, rejected, rules=tuple(cfg.rules), per_rule=cfg.per_rule, seed=cfg.seed)
    train, held = split(examples, cfg.heldout_fraction, cfg.seed)
    if not any(e.label == 1 for e in train) or not any(e.label == 1 for e in held):
        raise ValueError(f"need positives on both sides of the split; got {summarize(train)} / {summarize(held)}: "
                         "add kept records or change heldout_fraction")
    model = ScorerModel.from_backbone(cfg.backbone, max_length=cfg.max_length, device=cfg.device, seed=cfg.seed,
                                      head_dim=cfg.head_dim, head_layers=cfg.head_layers, dropout=cfg.dropout,
                                      finetune_encoder=cfg.finetune_encoder)
    log = train_model(model, train, cfg)
    metrics = evaluate(held, score_examples(model, held, cfg.eval_batch_size, progress=True))
    counts = {"train": summarize(train), "heldout": summarize(held)}
    seconds = time.monotonic() - started
    manifest = {
        "backbone": cfg.backbone,
        "config": asdict(cfg),
        "data": {"kept": [str(p) for p in kept], "rejected": [str(p) for p in rejected], "counts": counts},
        "split": {"by": "source record", "heldout_fraction": cfg.heldout_fraction, "seed": cfg.seed},
        "metrics": {"heldout": metrics},
        "train_log": log,
        "train_seconds": round(seconds, 1),
    }
    ckpt = model.save(out, manifest)
    return TrainResult(ckpt, metrics, counts, log, seconds)
