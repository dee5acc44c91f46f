"""``medsage demo``: the README's one command, end to end on 2 CPU cores with no network and no GPU.

It is ``medsage pipeline +experiment=miniature`` (recipes/experiment/miniature.yaml): a generated lesion
task -> the data pipeline (box-derived questions, dedup against the eval slices) -> offline synthesis with
retry examples -> a real LLaMA-Factory SFT of a small random Qwen2.5-VL -> a few R-GRPO steps through
verl's own trainer on CPU -> evaluation of the RL model with and without the image -> the report; then
a viewer page of the evaluated items. Every stage is a Ray job on an embedded loopback cluster;
rerunning skips finished stages. ``--experiment demo`` runs the older smoke chain over the four source
layouts and five benchmark layouts instead.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("Run the embedded demo on CPU: `medsage pipeline +experiment=miniature`, then a viewer "
                          "page. Needs the dev extra (make demo installs it).")
    parser.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    parser.add_argument("--experiment", default="miniature", choices=["miniature", "demo"],
                        help="miniature: the lesion task that learns (default); demo: every source and benchmark "
                             "layout, a random model")
    add_overrides(parser, "'sft_overrides=[\"sft.num_train_epochs=1\"]' (pipeline overrides)")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("demo", argv)

    from medsage.eval import layout as eval_layout
    from medsage.eval.view.build import main as view
    from medsage.launch import layout as launch_layout
    from medsage.launch.pipeline.app import main as pipeline

    out = Path(args.out).resolve()
    started = time.time()
    rc = pipeline([f"+experiment={args.experiment}", f"run_root={out}", *args.overrides])
    if rc:
        return rc
    job = json.loads((out / args.experiment / launch_layout.PIPELINE).read_text())["stages"]
    view_dir = out / args.experiment / "view"
    view([job["eval"]["out_dir"], "--out", str(view_dir)])

    summary = json.loads((Path(job["eval"]["out_dir"]) / eval_layout.RUN).read_text())["summaries"]
    sft_model = launch_layout.sft_model(Path(job["sft"]["out_dir"]))
    sft_manifest = json.loads((sft_model / launch_layout.SFT_MANIFEST).read_text())
    losses = sft_manifest.get("losses") or [float("nan")]
    print()
    print(f"demo finished in {time.time() - started:.0f} s (rerun: finished stages are skipped)")
    print(f"  stage folders   {out / 'store'}")
    print(f"  SFT model       {sft_model}   loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    rl_dir = Path(job["rl"]["out_dir"])
    print(f"  RL model        {rl_dir / launch_layout.RL_FINAL_MODEL}   (R-GRPO on CPU; rollouts: "
          f"medsage view {rl_dir / 'rollouts'})")
    print(f"  evaluation      {job['eval']['out_dir']}   ({_scores(summary, args.experiment)})")
    if "eval_sft" in job:  # the SFT model on the same items: what RL changed, even when it is nothing
        sft_summary = json.loads((Path(job["eval_sft"]["out_dir"]) / eval_layout.RUN).read_text())["summaries"]
        print(f"  SFT, same items {job['eval_sft']['out_dir']}   ({_scores(sft_summary, args.experiment)})")
        print(f"  RL changed      {_changes(sft_summary, summary)}")
    print(f"  report          {out / args.experiment / launch_layout.REPORT_DIR / 'report.md'} (+ CSV and PNG)")
    print(f"  viewer          {view_dir / 'index.html'}")
    return 0


def _accuracies(summary: dict) -> dict[str, float]:
    """The miniature's accuracies in %, by question kind in the report's order, then ``overall``."""
    from medsage.eval.report.miniature import KIND_COLUMNS

    s = summary.get("records", {})
    kinds = s.get("by_kind") or {}
    out = {k: kinds[k]["accuracy"] for k in KIND_COLUMNS if (kinds.get(k) or {}).get("accuracy") is not None}
    return {**out, "overall": s["accuracy"]} if s.get("accuracy") is not None else out


def _changes(sft: dict, rl: dict) -> str:
    """RL's accuracy minus SFT's, in points, per kind and overall; said plainly when nothing moved."""
    from medsage.eval.report.miniature import KIND_COLUMNS

    before, after = _accuracies(sft), _accuracies(rl)
    deltas = {k: after[k] - before[k] for k in after if k in before}
    if not deltas:
        return "nothing to compare"
    text = ", ".join(f"{KIND_COLUMNS.get(k, k)} {d:+.1f}" for k, d in deltas.items()) + " points"
    return text + (" (no accuracy moved)" if all(abs(d) < 1e-9 for d in deltas.values()) else "")


def _scores(summary: dict, experiment: str) -> str:
    from medsage.eval.report.miniature import CHANCE, KIND_COLUMNS

    if experiment != "miniature":
        scores = ", ".join(f"{b} {s['accuracy']:.0f}%" for b, s in summary.items() if s.get("accuracy") is not None)
        return f"{scores}: a random 1 MB model"
    parts = [f"{KIND_COLUMNS[k]} {a:.0f}% (chance {CHANCE[k]:g}%)" for k, a in _accuracies(summary).items()
             if k in KIND_COLUMNS]
    s = summary.get("records", {})
    iou, strict = s.get("loc_iou"), s.get("strict_format")
    parts += [f"<LOC> IoU {iou:.2f}" if iou is not None else "<LOC> IoU -",
              f"strict format {strict:.0f}%" if strict is not None else "strict format -"]
    return "; ".join(parts)
