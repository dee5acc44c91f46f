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


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("tiny-model", argv)

    from medsage.launch.demo.tiny_model import build_tiny_model

    out = build_tiny_model(args.out_dir, seed=args.seed, hidden_size=args.hidden_size,
                           text_layers=args.layers, vision_layers=args.vision_layers or args.layers,
                           vision_hidden_size=args.vision_hidden_size, grey_windows=args.grey_windows)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny Qwen2.5-VL written to {out} ({size / 1e6:.1f} MB, seed {args.seed})")
    return 0
