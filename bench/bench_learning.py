"""Does the method learn? The miniature (issue 18) end to end on CPU: Table 5's rows and the α sweep, with times.

    python bench/bench_learning.py [--keep DIR] [--rows sft,sft_rl,sft_rl_self] [--alphas 0,0.2] [overrides...]

1. `medsage pipeline +experiment=miniature -m +table5_row=<rows>`: one SFT, shared, then GRPO and R-GRPO;
2. `medsage pipeline +experiment=miniature -m alpha=<alphas> table=table4` (the α=0.2 RL run is the
   SFT + RL + Self row's: the stage store shares it);
3. prints, per run: accuracy per question kind against its chance level, overall accuracy, the <LOC> IoU,
   the strict-format rate, yes/no accuracy with blank images (the blind check), the RL training's
   self-check and correction rates, and the time of every stage. The pipeline's own report (Markdown,
   CSV, PNG) is written under <DIR>/miniature/report.

The targets (issue 18): SFT yes/no >= 90 %, quadrant >= 70 %, IoU >= 0.5, strict format >= 95 %, blind yes/no
<= 60 %, RL not below SFT with non-zero self-check and correction rates. The script reports what it measures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medsage.eval import layout as eval_layout
from medsage.eval.report.miniature import CHANCE, KIND_COLUMNS as KIND_NAMES
from medsage.eval.report.tables import training_mean
from medsage.launch import layout


def pipeline(work: Path, *overrides: str) -> float:
    cmd = [sys.executable, "-m", "medsage.launch.cli", "pipeline", "+experiment=miniature", f"run_root={work}", *overrides]
    print("$", " ".join(cmd[2:]), flush=True)
    t = time.perf_counter()
    if subprocess.run(cmd).returncode:
        sys.exit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - t


def _accuracy(summary: dict, kind: str) -> float | None:
    got = (summary.get("by_kind") or {}).get(kind) or {}
    return got.get("accuracy")


def _rl_rates(rl_dir: Path) -> tuple[float | None, float | None]:
    """The self-check and correction rates (%) of an RL run, averaged over its steps, as the report reads them."""
    run = {"tags": {"train_metrics": str(rl_dir / "metrics.jsonl")}}
    return training_mean(run, "medsage/self_check_rate"), training_mean(run, "medsage/correction_rate")


def rows(work: Path) -> list[dict]:
    """One row per evaluated run of the store, with the run.json summaries."""
    out = []
    for stage_json in sorted(work.glob(f"store/eval-*/{layout.STAGE}")):
        run = stage_json.parent / eval_layout.RUN
        if not run.exists():
            continue
        data = json.loads(run.read_text())
        tags = data.get("tags") or {}
        sighted = (data.get("summaries") or {}).get("records") or {}
        blind = (data.get("blind_summaries") or {}).get("records") or {}
        model = Path(data.get("model_path", ""))
        rl_dir = model.parent if model.name == layout.RL_FINAL_MODEL else None
        rate, fixed = _rl_rates(rl_dir) if rl_dir else (None, None)
        out.append({"row": tags.get("row") or f"alpha={tags.get('alpha')}", "table": tags.get("table"),
                    "sighted": sighted, "blind": blind, "self_check": rate, "correction": fixed})
    return out


def stage_times(work: Path) -> dict[str, float]:
    times: dict[str, float] = {}
    for stage_json in work.glob(f"store/*/{layout.STAGE}"):
        s = json.loads(stage_json.read_text())
        if s.get("ended") and s.get("started"):
            times[s["stage"]] = times.get(s["stage"], 0.0) + s["ended"] - s["started"]
    return times


def _pct(v) -> str:
    return "   -" if v is None else f"{v:5.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--rows", default="sft,sft_rl,sft_rl_self", help="recipes/table5_row options to run")
    parser.add_argument("--alphas", default="0,0.2", help="α values of the sweep ('' to skip it)")
    parser.add_argument("overrides", nargs="*", help="more pipeline overrides, e.g. task.train=400 "
                        "'sft_overrides=[sft.num_train_epochs=6]'")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="medsage-learning-"))
    wall = {"table5 rows": pipeline(work, "-m", f"+table5_row={args.rows}", "table=table5", *args.overrides)}
    if args.alphas:
        wall["alpha sweep"] = pipeline(work, "-m", f"alpha={args.alphas}", "table=table4", *args.overrides)

    kinds = list(CHANCE)
    print(f"\nminiature: a synthetic lesion task (not the paper's benchmarks); {work}")
    print(f"{'run':<16}" + "".join(f"{KIND_NAMES[k]:>16}" for k in kinds)
          + f"{'overall':>9}{'LOC IoU':>9}{'strict':>8}{'blind y/n':>10}{'check':>7}{'fixed':>7}")
    print(f"{'chance':<16}" + "".join(f"{CHANCE[k]:>16.1f}" for k in kinds) + f"{'':>9}{'0':>9}{'':>8}{50.0:>10.1f}")
    for r in sorted(rows(work), key=lambda r: (str(r["table"]), str(r["row"]))):
        s = r["sighted"]
        iou = s.get("loc_iou")
        print(f"{str(r['row'])[:16]:<16}" + "".join(f"{_pct(_accuracy(s, k)):>16}" for k in kinds)
              + f"{_pct(s.get('accuracy')):>9}{'-' if iou is None else f'{iou:.2f}':>9}{_pct(s.get('strict_format')):>8}"
              + f"{_pct(_accuracy(r['blind'], 'presence')) if r['blind'] else '   -':>10}"
              + f"{_pct(r['self_check']):>7}{_pct(r['correction']):>7}")
    print("\nseconds per stage (summed over the runs that ran it): "
          + ", ".join(f"{k} {v:.0f}" for k, v in sorted(stage_times(work).items(), key=lambda kv: -kv[1])))
    print("wall: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items())
          + f"; report: {work / 'miniature' / layout.REPORT_DIR / 'report.md'}")


if __name__ == "__main__":
    main()
