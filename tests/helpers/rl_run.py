"""One short `medsage rl` run of the tiny model, shared by the CPU training tests and the GPU smoke test.

Same recipe on both: 2 prompts x 2 rollouts, short τ1 and retry budgets, a short request, 2 steps of
verl's own trainer. Only the cluster recipe differs (local_cpu: the CPU route; a100_1x: vLLM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parent

TINY_RL = ["rl.epochs=1", "rl.rollout_n=2", "rl.rollout_batch_prompts=2", "rl.micro_batch_per_device=2",
           "rl.grad_accum=1", "rl.log_prob_micro_batch=4", "rl.max_prompt_length=512", "rl.max_response_length=24",
           "rl.retry_max_tokens=24", "rl.request_budget=48", "rl.request='Check the answer.'", "rl.test_freq=-1"]


def write_rl_parquet(tmp_path: Path, repeat: int = 1) -> Path:
    """Closed and choice questions alternating (two prompt lengths in every batch of two), in order: 8 rows,
    ``repeat`` times (a GPU cluster recipe's step is 12 prompts, and ``medsage rl`` refuses fewer rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from medsage.data_pipeline.writers import write_verl_parquet
    from medsage.launch.demo.samples import make_demo_samples

    samples = [s for s in make_demo_samples(tmp_path / "demo", n=12) if s.question_type in ("closed", "choice")]
    path = write_verl_parquet(samples[:8], tmp_path / "rl.parquet")
    if repeat > 1:
        pq.write_table(pa.concat_tables([pq.read_table(path)] * repeat), path)
    return path


def run_rl(tmp_path: Path, model, data, *overrides, cluster="local_cpu", extra=(), env=None, timeout=1500, steps=2):
    """Run `medsage rl` from the empty folder ``tmp_path/cwd`` (it must stay empty: verl's Hydra run folder
    goes into the output folder); returns (output folder, rc, whole log). ``steps``: verl's optimiser steps."""
    out = tmp_path / "run"
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    verl_extra = [f"trainer.total_training_steps={steps}", "trainer.val_before_train=false", "data.shuffle=false", *extra]
    cmd = [sys.executable, "-m", "medsage.launch.cli", "rl", "model=tiny", f"model.path={model}", f"cluster={cluster}",
           f"train_files={data}", f"output_dir={out}", *TINY_RL, *overrides,
           "extra_overrides=[" + ",".join(f"'{o}'" for o in verl_extra) + "]"]
    # tests/helpers on the path of verl's Ray workers too (the test-only agent loop lives here)
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join(p for p in (str(HELPERS), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    return out, proc.returncode, proc.stdout + proc.stderr


def dumped(out: Path, steps=(1, 2)) -> list[dict]:
    """verl's rollout dump (trainer.rollout_data_dir), all steps' rows."""
    rows = []
    for step in steps:
        rows += [json.loads(line) for line in (out / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
    return rows
