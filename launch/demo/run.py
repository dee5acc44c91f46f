"""``medsage demo``: the README's one command, end to end on 2 CPU cores with no network and no GPU.

It is ``medsage pipeline +experiment=demo`` (recipes/experiment/demo.yaml): generated sources -> the
data pipeline with the offline synthesizer -> a real LLaMA-Factory SFT of the tiny model -> the RL
stage trains a few R-GRPO steps through verl's own trainer on CPU -> evaluation of the RL model on
generated benchmarks -> the paper-table report; then a viewer page of the evaluated
items. Every stage is a Ray job on an embedded loopback cluster; rerunning skips finished stages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="medsage demo",
        description="Run the embedded demo on CPU: `medsage pipeline +experiment=demo`, then a viewer page. "
                    "Needs the dev extra (make demo installs it).",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    parser.add_argument("overrides", nargs="*", help="more pipeline overrides, e.g. 'sft_overrides=[\"sft.num_train_epochs=1\"]'")
    args = parser.parse_args(argv)

    from medsage.eval.view.build import main as view
    from medsage.launch.pipeline.app import main as pipeline

    out = Path(args.out).resolve()
    started = time.time()
    rc = pipeline(["+experiment=demo", f"run_root={out}", *args.overrides])
    if rc:
        return rc
    job = json.loads((out / "demo" / "pipeline.json").read_text())["stages"]
    view_dir = out / "demo" / "view"
    view([job["eval"]["out_dir"], "--out", str(view_dir)])

    summary = json.loads((Path(job["eval"]["out_dir"]) / "run.json").read_text())["summaries"]
    sft_manifest = json.loads((Path(job["sft"]["out_dir"]) / "run_001" / "medsage_manifest.json").read_text())
    losses = sft_manifest.get("losses") or [float("nan")]
    print()
    print(f"demo finished in {time.time() - started:.0f} s (rerun: finished stages are skipped)")
    print(f"  stage folders   {out / 'store'}")
    print(f"  SFT model       {job['sft']['out_dir']}/run_001   loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    rl_dir = Path(job["rl"]["out_dir"])
    print(f"  RL model        {rl_dir / 'final_model'}   (R-GRPO on CPU; rollouts in {rl_dir / 'rollouts'})")
    scores = ", ".join(f"{b} {100 * s['accuracy']:.0f}%" for b, s in summary.items() if s.get("accuracy") is not None)
    print(f"  evaluation      {job['eval']['out_dir']}   ({scores}: a random 1 MB model)")
    print(f"  report          {out / 'demo' / 'report' / 'report.md'} (+ CSV and PNG)")
    print(f"  viewer          {view_dir / 'index.html'}")
    return 0
