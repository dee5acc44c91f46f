"""Overhead of `medsage sft` over calling `llamafactory-cli train` directly on the YAML it generates.

Same tiny model, same 12 LVKC samples, same LLaMA-Factory YAML (only output_dir differs), CPU:

    .venv/bin/python bench/bench_sft_overhead.py [--repeats 2] [--epochs 1]

Prints wall seconds of each, the overhead (target: under 5 s) and the ratio, plus the cold cost of
reading LLaMA-Factory's argument classes once (cached afterwards per LLaMA-Factory version).
Runs alternate (medsage, direct, medsage, direct, ...) so machine load hits both alike; the
minimum over repeats is the A/B figure. Because startup of the trainer itself varies by several
seconds under load, the exact overhead is also printed: medsage's wall time minus the wall time of
the training child it ran, plugins/engines/llamafactory_train.py (the manifest's trainer_seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the tiny run (default 1: 6 steps)")
    args = parser.parse_args()

    import yaml

    from medsage.launch.demo.samples import make_demo_samples
    from medsage.data_pipeline.writers import write_llava_sft
    from medsage.launch.demo.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    model_dir = build_tiny_model(work / "tiny_model")
    data_dir = work / "data"
    write_llava_sft(make_demo_samples(data_dir, n=12), data_dir, name="demo_sft")
    env = {**os.environ, "MEDSAGE_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    bin_dir = Path(sys.executable).parent
    medsage = [str(bin_dir / "medsage"), "sft", "--quiet", "--fresh", "model=tiny", f"model.path={model_dir}",
               "sft=tiny_cpu", "cluster=local_cpu", f"data.dataset_dir={data_dir}", "data.dataset=demo_sft",
               f"output.dir={work / 'runs'}", f"sft.num_train_epochs={args.epochs}"]

    # Cold: the first dry run reads LLaMA-Factory's dataclasses (imports torch + transformers) and caches them.
    cold = _timed([*medsage[:2], "--dry-run", *medsage[2:]], env)
    warm = _timed([*medsage[:2], "--dry-run", *medsage[2:]], env)

    wrapped, direct, own = [], [], []
    for i in range(args.repeats):
        wrapped.append(_timed(medsage, env))
        run_dir = sorted((work / "runs").glob("run_*"))[-1]
        # medsage's own share of this run: its wall time minus the llamafactory-cli child it waited on.
        trainer = json.loads((run_dir / "medsage_manifest.json").read_text())["attempts"][-1]["trainer_seconds"]
        own.append(wrapped[-1] - trainer)
        config = yaml.safe_load((run_dir / "llamafactory_sft.yaml").read_text())
        config["output_dir"] = str(work / f"direct_{i}")
        direct_yaml = work / f"direct_{i}.yaml"
        direct_yaml.write_text(yaml.safe_dump(config, sort_keys=False))
        # Same environment medsage gives the trainer on CPU.
        direct.append(_timed([str(bin_dir / "llamafactory-cli"), "train", str(direct_yaml)],
                             {**env, "FORCE_TORCHRUN": "0", "CUDA_VISIBLE_DEVICES": ""}))

    best_w, best_d = min(wrapped), min(direct)
    print(f"tiny Qwen2.5-VL, 12 samples, {args.epochs} epoch(s), CPU, {args.repeats} repeats; work dir {work}")
    print(f"  medsage sft --dry-run, cold schema : {cold:6.2f} s  (reads LLaMA-Factory's dataclasses once)")
    print(f"  medsage sft --dry-run, warm        : {warm:6.2f} s  (compose + validate + plan, cached schema)")
    print(f"  medsage sft (train)                : {best_w:6.2f} s  min  (median {statistics.median(wrapped):.2f})")
    print(f"  llamafactory-cli train (same YAML) : {best_d:6.2f} s  min  (median {statistics.median(direct):.2f})")
    print(f"  overhead, A/B (min - min)          : {best_w - best_d:6.2f} s  (target < 5 s; noisy on a shared machine)")
    print(f"  ratio medsage / direct             : {best_w / best_d:6.3f}")
    print(f"  overhead, exact (wall - child)     : {statistics.median(own):6.2f} s  median (max {max(own):.2f}); "
          f"ratio {statistics.median([w / (w - o) for w, o in zip(wrapped, own)]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
