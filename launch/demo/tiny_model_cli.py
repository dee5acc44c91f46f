"""``medsage tiny-model OUT_DIR``: build the random test model."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.description = (
        "Build a random, few-MB Qwen2.5-VL (2-layer text and vision towers, a byte-level BPE "
        "tokenizer with the Qwen2-VL special tokens, image and video processors, a chat template) "
        "entirely offline. The same seed writes the same bytes. It loads with AutoProcessor and "
        "Qwen2_5_VLForConditionalGeneration and trains under LLaMA-Factory with template qwen2_vl.")
    parser.add_argument("out_dir", help="folder to write the checkpoint into (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default: 0)")
    parser.add_argument("--hidden-size", type=int, default=64, help="text hidden size (default: 64)")
    parser.add_argument("--layers", type=int, default=2, help="text tower depth (default: 2)")
    parser.add_argument("--vision-layers", type=int, default=None, help="vision tower depth (default: --layers)")
    parser.add_argument("--vision-hidden-size", type=int, default=32, help="vision tower width (default: 32)")
    parser.add_argument("--grey-windows", action="store_true",
                        help="offset the image processor's three channels so a random tower sees grey level")
    parser.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary at most (default: 1024)")
    parser.add_argument("--tokenizer-corpus", metavar="FILE", default=None,
                        help="also learn the BPE merges from this text (a .json file: its string values)")
    parser.add_argument("--warm-up-on", metavar="RECORDS", default=None,
                        help="then train the vision tower on the boxes of a data run's records.jsonl "
                             "(launch/demo/vision_warmup.py; the miniature's stand-in for a pretrained tower)")
    parser.add_argument("--warm-up-eval", metavar="RECORDS", default=None,
                        help="score the warm-up's probe on a held-out run's records.jsonl (never trained on)")
    parser.add_argument("--warm-up-steps", type=int, default=None, help="warm-up optimiser steps (default: 1200)")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("tiny-model", argv)
    if (args.warm_up_eval or args.warm_up_steps) and not args.warm_up_on:
        raise SystemExit("tiny-model: --warm-up-eval and --warm-up-steps need --warm-up-on")

    from medsage.launch.demo.tiny_model import build_tiny_model, corpus_strings

    corpus = corpus_strings(args.tokenizer_corpus) if args.tokenizer_corpus else None
    out = build_tiny_model(args.out_dir, seed=args.seed, vocab_size=args.vocab_size, corpus=corpus,
                           hidden_size=args.hidden_size,
                           text_layers=args.layers, vision_layers=args.vision_layers or args.layers,
                           vision_hidden_size=args.vision_hidden_size, grey_windows=args.grey_windows)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny Qwen2.5-VL written to {out} ({size / 1e6:.1f} MB, seed {args.seed})")
    if args.warm_up_on:
        from medsage.launch.demo.vision_warmup import SUMMARY, WarmupConfig, warm_up_vision

        cfg = WarmupConfig(seed=args.seed, **({"steps": args.warm_up_steps} if args.warm_up_steps else {}))
        summary = warm_up_vision(out, args.warm_up_on, args.warm_up_eval, cfg)
        print(f"vision tower warmed up: {cfg.steps} steps, loss {summary['loss_first']:.3f} -> "
              f"{summary['loss_last']:.3f}; held-out probe accuracy "
              f"{(summary.get('eval_probe_accuracy') or {}).get('pooled')} "
              f"({out / SUMMARY})")
    return 0
