"""``medsage demo``: the README's one command, end to end on 2 CPU cores with no network and no GPU.

It is ``medsage pipeline +experiment=demo`` (recipes/experiment/demo.yaml): generated sources -> the
data pipeline with the offline synthesizer -> a real LLaMA-Factory SFT of the tiny model -> the RL
stage trains a few R-GRPO steps through verl's own trainer on CPU -> evaluation of the RL model on
generated benchmarks -> the paper-table report; then a viewer page of the evaluated
items. Every stage is a Ray job on an embedded loopback cluster; rerunning skips finished stages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("Run the embedded demo on CPU: `medsage pipeline +experiment=demo`, then a viewer page. "
                          "Needs the dev extra (make demo installs it).")
    parser.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
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
    rc = pipeline(["+experiment=demo", f"run_root={out}", *args.overrides])
    if rc:
        return rc
    job = json.loads((out / "demo" / launch_layout.PIPELINE).read_text())["stages"]
    view_dir = out / "demo" / "view"
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
    scores = ", ".join(f"{b} {100 * s['accuracy']:.0f}%" for b, s in summary.items() if s.get("accuracy") is not None)
    print(f"  evaluation      {job['eval']['out_dir']}   ({scores}: a random 1 MB model)")
    print(f"  report          {out / 'demo' / launch_layout.REPORT_DIR / 'report.md'} (+ CSV and PNG)")
    print(f"  viewer          {view_dir / 'index.html'}")
    return 0
