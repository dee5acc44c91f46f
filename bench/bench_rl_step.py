"""One R-GRPO run of the tiny model on CPU: start-up, each step, and medsage's share of a step.

    python bench/bench_rl_step.py [--steps 4] [--keep DIR] [--model SFT_DIR]   # run it under the shared CPU lock

`medsage rl` on cluster=local_cpu (verl's own trainer, the CPU route) for a few steps. Prints:
- wall time of the start-up (command start to the first step's start) and of each step (verl's timing_s/step);
- the share of a step spent in medsage's code: the self-check agent loop's own work (medsage/agent_loop_s:
  the server's generations and verl's agent-loop helpers excluded), the reward (medsage's compute_score
  re-run here on that step's dumped rollouts) and the estimator (verl's timing_s/adv, which is
  medsage_self_check); goal <= 5 %. verl's helpers the loop awaits (image loading, chat template, token
  merges: medsage/agent_loop_verl_s, wall time summed over concurrent rollouts, so an upper bound) are
  printed beside it as verl's;
- the retry's cost: extra rollout tokens per prompt (check + τ2) against the first-try error rate, and
  tokens per retried rollout (the retry should cost tokens only where τ1 was wrong).
Step 1 includes the first generation's warm-up; the share is reported for the later steps. The default
model is the random tiny one (every first try is wrong); ``--model`` takes a trained one instead, e.g. the
demo's SFT stage folder's run_001, whose first tries are right often enough to show the retry's cost split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLLOUTS, PROMPTS = 2, 2


def reward_seconds(rows: list[dict], reward_params: dict) -> float:
    from medsage.plugins.engines.verl_reward import compute_score

    started = time.perf_counter()
    for r in rows:
        compute_score("bench", r["output"], r["gts"], {"question_type": r.get("question_type", "closed")},
                      reward="composite", reward_params=reward_params)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps (default 4)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--model", help="a Qwen2.5-VL folder to train (default: build the random tiny model)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="medsage-bench-rl-"))
    work.mkdir(parents=True, exist_ok=True)

    from omegaconf import OmegaConf

    from medsage.data_pipeline.writers import write_verl_parquet
    from medsage.launch.demo.samples import make_demo_samples
    from medsage.launch.demo.tiny_model import build_tiny_model
    from medsage.plugins.engines.verl import console_step_metrics

    model = Path(args.model).resolve() if args.model else build_tiny_model(work / "model")
    data = write_verl_parquet(make_demo_samples(work / "demo", n=2 * PROMPTS * args.steps), work / "rl.parquet")
    out = work / "run"
    extra = [f"trainer.total_training_steps={args.steps}", "trainer.val_before_train=false"]
    cmd = [sys.executable, "-m", "medsage.launch.cli", "rl", "model=tiny", f"model.path={model}", "cluster=local_cpu",
           f"train_files={data}", f"output_dir={out}", "rl.epochs=1", f"rl.rollout_n={ROLLOUTS}",
           f"rl.rollout_batch_prompts={PROMPTS}", "rl.micro_batch_per_device=2", "rl.grad_accum=1",
           "rl.log_prob_micro_batch=4", "rl.max_prompt_length=512", "rl.max_response_length=64",
           "rl.retry_max_tokens=64", "rl.request_budget=48", "rl.request='Check the answer.'", "rl.save_freq=-1",
           "rl.test_freq=-1", "extra_overrides=[" + ",".join(f"'{o}'" for o in extra) + "]"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"medsage rl failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    steps = console_step_metrics(proc.stdout)
    reward_params = OmegaConf.to_container(OmegaConf.load(out / "medsage_rl.yaml").reward.params, resolve=True)

    step_s = [steps[s]["timing_s/step"] for s in sorted(steps)]
    startup = total - sum(step_s)
    print(f"R-GRPO on CPU, {'model ' + args.model if args.model else 'random tiny model'}, {PROMPTS} prompts x {ROLLOUTS} rollouts, {len(steps)} steps ({work})")
    print(f"  start-up (command to first step)   {startup:6.1f} s   (whole command {total:.1f} s)")
    rows = []
    for s in sorted(steps):
        m = steps[s]
        dump = [json.loads(line) for line in (out / "rollouts" / f"{s}.jsonl").read_text().splitlines()]
        parts = {"agent loop": m.get("medsage/agent_loop_s", 0.0), "reward": reward_seconds(dump, reward_params),
                 "estimator": m.get("timing_s/adv", 0.0)}
        share = sum(parts.values()) / m["timing_s/step"]
        rows.append((s, m, parts, share))
        print(f"  step {s}: {m['timing_s/step']:6.2f} s   medsage {100 * share:5.2f} %  ("
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in parts.items())
              + f"; verl's loop helpers <= {m.get('medsage/agent_loop_verl_s', 0) * 1000:.0f} ms, generation "
              f"{m.get('timing_s/gen', 0):.2f} s, actor update {m.get('timing_s/update_actor', 0):.2f} s)")
    later = rows[1:] or rows
    mean_share = sum(r[3] for r in later) / len(later)
    print(f"  medsage's share of a step (steps 2+): {100 * mean_share:.2f} %   (goal <= 5 %)")
    for s, m, _, _ in rows:
        err = m.get("medsage/first_try_error_rate", float("nan"))
        print(f"  retry cost, step {s}: first-try error rate {err:.2f}, retried {m.get('medsage/self_check_rate', 0):.2f}; "
              f"extra tokens per prompt {ROLLOUTS * m.get('medsage/retry_tokens_per_rollout', 0):.1f}, "
              f"per retried rollout {m.get('medsage/retry_tokens_per_retry', 0):.1f}")


if __name__ == "__main__":
    main()
