"""Orchestration overhead: `medsage pipeline` on the tiny demo vs the same stage commands run directly.

    python bench/bench_pipeline_overhead.py [--keep DIR]

1. `medsage pipeline +experiment=demo` into a fresh folder (embedded Ray cluster, one job per stage);
2. the exact commands it recorded in each stage.json, rewritten to a second fresh folder and run one after
   another as plain subprocesses (no Ray, no Hydra app, no manifests).
Prints both wall times, the difference and the ratio (both runs do the same work: fresh folders, no skips),
and the pipeline's fixed cost: its wall time less its stages' own (stage.json's started..ended), i.e. Hydra,
planning, Ray's start where no stage overlaps it, the hand-offs and the report; goal < 15 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medsage.launch import layout


def run(cmd: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="medsage-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    medsage = [sys.executable, "-m", "medsage.launch.cli"]

    piped = work / "pipeline"
    t_pipeline = run([*medsage, "pipeline", "+experiment=demo", f"run_root={piped}"], work)

    direct_store = work / "direct"
    job = json.loads((piped / "demo" / layout.PIPELINE).read_text())
    stages = job["order"]
    manifests = {name: json.loads((Path(job["stages"][name]["out_dir"]) / "stage.json").read_text()) for name in stages}
    in_stages = sum(m["ended"] - m["started"] for m in manifests.values())
    here = [name for name, m in manifests.items() if str(m.get("job", "")).startswith("local-")]
    direct = {}
    for name in stages:
        command = manifests[name]["command"][1:]
        command = [c.replace(str((piped / "store").resolve()), str(direct_store)) for c in command]
        direct[name] = run([*medsage, *command], work)
        print(f"  direct {name:<10} done", flush=True)
    t_direct = sum(direct.values())

    print(f"\n{'stage':<11}{'in the pipeline':>16}{'direct':>9}")
    for name in stages:
        where = "here, while Ray started" if name in here else "Ray job"
        print(f"{name:<11}{manifests[name]['ended'] - manifests[name]['started']:>14.1f} s{direct[name]:>7.1f} s  {where}")
    print(f"medsage pipeline (Ray jobs, manifests, report): {t_pipeline:7.1f} s")
    print(f"same commands run directly                    : {t_direct:7.1f} s")
    print(f"overhead: {t_pipeline - t_direct:+.1f} s   ratio pipeline/direct: {t_pipeline / t_direct:.2f}")
    print(f"fixed cost (pipeline wall - its stages' own {in_stages:.1f} s): {t_pipeline - in_stages:.1f} s (goal < 15 s); "
          f"run here while Ray started: {', '.join(here) or 'none'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
