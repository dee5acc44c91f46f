"""``medsage scorer``: train or evaluate the trajectory quality scorer (paper A.4).

    medsage scorer train --kept out/synth/kept.jsonl --rejected out/synth/rejected.jsonl --out out/scorer [overrides]
    medsage scorer eval --checkpoint out/scorer --kept ... [--rejected ...] [--split heldout|all] [--out metrics.json]

``train`` composes ``recipes/scorer/minilm.yaml`` (or ``--config``) with Hydra overrides
(``epochs=5 finetune_encoder=true device=cuda``), trains on the records outside the held-out
split, prints per-kind AUROC / accuracy on the held-out records and saves the checkpoint with a
manifest. ``eval`` scores records with a saved checkpoint; ``--split heldout`` re-derives the
split the checkpoint was trained with (its manifest holds the fraction and seed), so the numbers
are on records it never saw.
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_arguments(p) -> None:
    from medsage.launch.cli import add_commands, add_overrides

    p.description, _, p.epilog = __doc__.strip().partition("\n\n")
    sub = add_commands(p)
    tr = sub.add_parser("train", help="train on kept vs rejected + generated negatives; held-out metrics; checkpoint")
    # One path per flag, repeatable: a list-valued flag would swallow the Hydra overrides that follow it.
    tr.add_argument("--kept", action="append", required=True, help="kept.jsonl from `medsage data synth run` (repeatable)")
    tr.add_argument("--rejected", action="append", default=[],
                    help="rejected.jsonl: its failed drafts are negatives (repeatable)")
    tr.add_argument("--out", required=True, help="checkpoint folder (replaced atomically when it exists)")
    tr.add_argument("--config", default="scorer/minilm", help="recipe name under medsage's recipes folder")
    add_overrides(tr, "epochs=5 device=cuda finetune_encoder=true")
    ev = sub.add_parser("eval", help="per-kind AUROC / accuracy of a checkpoint on records")
    ev.add_argument("--checkpoint", required=True, help="folder written by `medsage scorer train`")
    ev.add_argument("--kept", action="append", required=True, help="kept.jsonl: the positives (repeatable)")
    ev.add_argument("--rejected", action="append", default=[], help="rejected.jsonl (repeatable)")
    ev.add_argument("--split", choices=("heldout", "all"), default="heldout",
                    help="heldout: only records the checkpoint's split held out (default); all: every record")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ev.add_argument("--batch-size", type=int, default=64)
    ev.add_argument("--out", help="also write the metrics here as JSON")


def format_metrics(metrics: dict[str, dict]) -> str:
    """A fixed-width table: one line per kind; ``-`` where a value is undefined."""

    def cell(v, width: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"

    lines = [f"{'kind':<34} {'n':>5} {'auroc':>7} {'acc':>7} {'pairwise':>9} {'mean':>6}"]
    for kind, m in metrics.items():
        lines.append(f"{kind:<34} {m['n']:>5} {cell(m.get('auroc'), 7)} {cell(m.get('accuracy'), 7)} "
                     f"{cell(m.get('pairwise'), 9)} {cell(m.get('mean_score'), 6)}")
    return "\n".join(lines)


def _train(args) -> int:
    from medsage.config import typed
    from medsage.plugins.scorer.train import TrainConfig, run_train
    from medsage.recipes import compose
    from omegaconf import OmegaConf

    cfg = typed(TrainConfig, OmegaConf.to_container(compose(args.config, args.overrides), resolve=True),
                f"recipes/{args.config}.yaml")
    result = run_train(args.kept, args.rejected, args.out, cfg)
    print(format_metrics(result.metrics))
    print(f"checkpoint: {result.checkpoint} ({result.seconds:.0f} s)")
    return 0


def _eval(args) -> int:
    from medsage.plugins.scorer.data import load_examples, split
    from medsage.plugins.scorer.model import ScorerModel, read_manifest
    from medsage.plugins.scorer.train import evaluate, score_examples

    from medsage.io import atomic_write_json

    manifest = read_manifest(args.checkpoint)
    cfg = manifest["config"]
    examples = load_examples(args.kept, args.rejected, rules=tuple(cfg["rules"]), per_rule=cfg["per_rule"],
                             seed=cfg["seed"])
    if args.split == "heldout":
        _, examples = split(examples, manifest["split"]["heldout_fraction"], manifest["split"]["seed"])
    if not any(e.label == 1 for e in examples):
        raise ValueError("no positives to evaluate against (check --kept, or use --split all)")
    model = ScorerModel.load(args.checkpoint, device=args.device)
    metrics = evaluate(examples, score_examples(model, examples, args.batch_size, progress=True))
    print(format_metrics(metrics))
    if args.out:
        atomic_write_json(args.out, {"checkpoint": str(Path(args.checkpoint).resolve()), "split": args.split,
                                     "metrics": metrics})
    return 0


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("scorer", argv)
    from hydra.errors import HydraException

    from medsage.records import RecordError

    try:
        return _train(args) if args.command == "train" else _eval(args)
    except (RecordError, HydraException, ValueError, OSError) as err:
        print(f"medsage scorer: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
