"""One R-GRPO run of the tiny model on CPU: start-up, each step, and medsage's share of a step.

    python bench/bench_rl_step.py [--steps 100] [--keep DIR] [--model SFT_DIR]   # run it under the shared CPU lock
    python bench/bench_rl_step.py --baseline /path/to/older/checkout/.venv/bin/python   # and the ratio to it

`medsage rl` on cluster=local_cpu (verl's own trainer, the CPU route), 2 prompts x 4 rollouts a step. Prints:
- wall time of the start-up (command start to the first step's start, read off the arrival time of verl's
  step lines), of the first step (the rollout's warm-up; start-up and first step together are the time to
  the first update, which does not depend on where verl's processes finish starting), of the later steps (their mean; verl's
  timing_s/step) and of 100 steps (actual when the run had them, else projected: first step + 99 x mean);
- where the start-up's CPU went: each process of the run's tree (``medsage rl``, verl's driver, every Ray actor)
  with its CPU seconds up to the first step line, their sum, and the shortest start-up that sum allows on this
  machine's cores, however well the processes overlap;
- with ``--baseline PYTHON``: the same command, model and data run first with another environment's
  ``medsage`` (e.g. an older checkout's virtualenv) for ``--baseline-steps`` steps, and the ratio of each
  figure to it (baseline / this one: above 1 is faster);
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
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROLLOUTS, PROMPTS = 4, 2
TARGET_STEPS = 100


def reward_seconds(rows: list[dict], reward_params: dict) -> float:
    from medsage.plugins.engines.verl_reward import compute_score

    started = time.perf_counter()
    for r in rows:
        compute_score("bench", r["output"], r["gts"], {"question_type": r.get("question_type", "closed")},
                      reward="composite", reward_params=reward_params)
    return time.perf_counter() - started


@dataclass
class Run:
    """One ``medsage rl`` run: its wall times (s) and verl's step metrics."""

    total: float
    startup: float  # command start to the first step's start
    steps: dict[int, dict[str, float]]
    out: Path
    startup_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process, up to the first step line

    @property
    def step_s(self) -> list[float]:
        return [self.steps[s]["timing_s/step"] for s in sorted(self.steps)]

    @property
    def later_mean(self) -> float:
        later = self.step_s[1:] or self.step_s
        return sum(later) / len(later)

    def hundred_steps(self) -> tuple[float, str]:
        if len(self.step_s) >= TARGET_STEPS:
            return sum(self.step_s[:TARGET_STEPS]), "actual"
        return self.step_s[0] + (TARGET_STEPS - 1) * self.later_mean, "projected"


class ProcessCPU:
    """CPU seconds (user + system) of a command's whole process tree, sampled every half second until ``stop``.

    Ray's actors are descendants of verl's driver (its ``ray.init`` starts the local cluster), so the tree holds
    every process the run starts. A process is labelled by its Ray title (``ray::TaskRunner``) or its module or
    script; its CPU is the last sample, so a process that ended between samples loses up to half a second.
    """

    def __init__(self, pid: int, every: float = 0.5) -> None:
        import psutil

        self._root, self._every = psutil.Process(pid), every
        self._seen: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def label(cmdline: list[str]) -> str:
        if cmdline and cmdline[0].startswith("ray::"):
            return cmdline[0].split()[0].split(".")[0]
        if "-m" in cmdline[:-1]:
            module = cmdline[cmdline.index("-m") + 1]
            return f"{module} {cmdline[cmdline.index('-m') + 2]}" if module == "medsage.launch.cli" else module
        return Path(next((a for a in cmdline[1:] if not a.startswith("-")), cmdline[0] if cmdline else "?")).name

    def _sample(self) -> None:
        import psutil

        while not self._done.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
            except psutil.Error:
                return
            for p in procs:
                try:
                    with p.oneshot():
                        times = p.cpu_times()
                        self._seen[p.pid] = (self.label(p.cmdline()), times.user + times.system)
                except psutil.Error:
                    continue
            self._done.wait(self._every)

    def stop(self) -> None:
        if not self._done.is_set():
            self._done.set()
            self._thread.join()

    def by_process(self) -> dict[str, float]:
        """Label -> CPU seconds, one entry per process (a second process of a label gets ``#2``)."""
        out: dict[str, float] = {}
        for label, seconds in sorted(self._seen.values(), key=lambda kv: -kv[1]):
            key, n = label, 1
            while key in out:
                n += 1
                key = f"{label} #{n}"
            out[key] = seconds
        return out


def startup_cpu_lines(run: Run) -> list[str]:
    """Where the start-up's CPU went: the processes that took a second or more, their sum, and what that sum
    allows on this machine's cores however well the start-up overlaps."""
    cores = os.cpu_count() or 1
    big = {k: v for k, v in run.startup_cpu.items() if v >= 1.0}
    total = sum(run.startup_cpu.values())
    return [f"  start-up CPU (to the first step line), {len(big)} processes with >= 1 s: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in big.items()),
            f"  start-up CPU in all {total:.0f} s on {cores} cores: no start-up can be shorter than {total / cores:.0f} s "
            f"here, however its processes overlap (start-up measured: {run.startup:.1f} s)"]


def run_rl(python: str, model: Path, data: Path, out: Path, steps: int) -> Run:
    """``medsage rl`` with ``python``'s environment; each output line timed as it arrives."""
    from medsage.plugins.engines.verl import console_step_metrics

    extra = [f"trainer.total_training_steps={steps}", "trainer.val_before_train=false"]
    cmd = [python, "-m", "medsage.launch.cli", "rl", "model=tiny", f"model.path={model}", "cluster=local_cpu",
           f"train_files={data}", f"output_dir={out}", "rl.epochs=1", f"rl.rollout_n={ROLLOUTS}",
           f"rl.rollout_batch_prompts={PROMPTS}", "rl.micro_batch_per_device=2", "rl.grad_accum=1",
           "rl.log_prob_micro_batch=4", "rl.max_prompt_length=512", "rl.max_response_length=64",
           "rl.retry_max_tokens=64", "rl.request_budget=48", "rl.request='Check the answer.'", "rl.save_freq=-1",
           "rl.test_freq=-1", "extra_overrides=[" + ",".join(f"'{o}'" for o in extra) + "]"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    cpu = ProcessCPU(proc.pid)
    lines, first_step_line = [], None
    for line in proc.stdout:
        lines.append(line)
        if first_step_line is None and "step:1 - " in line:
            first_step_line = time.perf_counter() - started
            cpu.stop()
    cpu.stop()
    rc = proc.wait()
    total = time.perf_counter() - started
    log = "".join(lines)
    if rc != 0:
        sys.exit(f"medsage rl ({python}) failed ({rc}):\n{log[-4000:]}")
    steps = console_step_metrics(log)
    if not steps or first_step_line is None:
        sys.exit(f"medsage rl ({python}) printed no step metrics:\n{log[-4000:]}")
    return Run(total=total, startup=first_step_line - steps[min(steps)]["timing_s/step"], steps=steps, out=out,
               startup_cpu=cpu.by_process())


def summary(run: Run, label: str) -> list[str]:
    hundred, how = run.hundred_steps()
    return [(f"  {label}: start-up {run.startup:6.1f} s, first step {run.step_s[0]:6.2f} s (to its end "
             f"{run.startup + run.step_s[0]:6.1f} s), later steps "
             f"{run.later_mean:5.2f} s each ({len(run.step_s)} steps), {TARGET_STEPS} steps {hundred:6.1f} s ({how}), "
             f"whole command {run.total:.1f} s")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TARGET_STEPS, help=f"training steps (default {TARGET_STEPS})")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--model", help="a Qwen2.5-VL folder to train (default: build the random tiny model)")
    parser.add_argument("--baseline", metavar="PYTHON",
                        help="run the same command first with this interpreter's medsage (e.g. an older checkout's "
                             ".venv/bin/python) and print the ratio to it")
    parser.add_argument("--baseline-steps", type=int, default=4, help="steps of the baseline run (default 4)")
    args = parser.parse_args()
    if args.steps < 2 or args.baseline_steps < 2:
        sys.exit("--steps and --baseline-steps: 2 or more (the first step is the warm-up)")
    work = Path(args.keep or tempfile.mkdtemp(prefix="medsage-bench-rl-"))
    work.mkdir(parents=True, exist_ok=True)

    from medsage.data_pipeline.writers import write_verl_parquet
    from medsage.launch.demo.samples import make_demo_samples
    from medsage.launch import layout
    from medsage.launch.demo.tiny_model import build_tiny_model
    from omegaconf import OmegaConf

    model = Path(args.model).resolve() if args.model else build_tiny_model(work / "model")
    prompts = PROMPTS * max(args.steps, args.baseline_steps if args.baseline else 0)
    data = write_verl_parquet(make_demo_samples(work / "demo", n=prompts), work / "rl.parquet")
    base = run_rl(args.baseline, model, data, work / "baseline", args.baseline_steps) if args.baseline else None
    run = run_rl(sys.executable, model, data, work / "run", args.steps)
    steps, out = run.steps, run.out
    reward_params = OmegaConf.to_container(OmegaConf.load(out / layout.RL_CONFIG).reward.params, resolve=True)

    print(f"R-GRPO on CPU, {'model ' + args.model if args.model else 'random tiny model'}, {PROMPTS} prompts x "
          f"{ROLLOUTS} rollouts, {len(steps)} steps ({work})")
    print("\n".join(summary(run, "this checkout") + (summary(base, f"baseline ({args.baseline})") if base else [])))
    if base:
        (b100, _), (r100, _) = base.hundred_steps(), run.hundred_steps()
        print(f"  ratio baseline / this checkout: start-up {base.startup / run.startup:.2f}x, to the end of the first "
              f"step {(base.startup + base.step_s[0]) / (run.startup + run.step_s[0]):.2f}x, later steps "
              f"{base.later_mean / run.later_mean:.2f}x, start-up + {TARGET_STEPS} steps "
              f"{(base.startup + b100) / (run.startup + r100):.2f}x")
    print("\n".join(startup_cpu_lines(run)))
    print(f"  goal: start-up <= 45 s ({run.startup:.1f} s), {TARGET_STEPS} steps <= 600 s "
          f"({run.hundred_steps()[0]:.1f} s, {run.hundred_steps()[1]})")
    rows = []
    for s in sorted(steps):
        m = steps[s]
        dump = [json.loads(line) for line in (out / "rollouts" / f"{s}.jsonl").read_text().splitlines()]
        parts = {"agent loop": m.get("medsage/agent_loop_s", 0.0), "reward": reward_seconds(dump, reward_params),
                 "estimator": m.get("timing_s/adv", 0.0)}
        share = sum(parts.values()) / m["timing_s/step"]
        rows.append((s, m, parts, share))
        if s <= 4 or s == max(steps):
            print(f"  step {s}: {m['timing_s/step']:6.2f} s   medsage {100 * share:5.2f} %  ("
                  + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in parts.items())
                  + f"; verl's loop helpers <= {m.get('medsage/agent_loop_verl_s', 0) * 1000:.0f} ms, generation "
                  f"{m.get('timing_s/gen', 0):.2f} s, old log-probs {m.get('timing_s/old_log_prob', 0):.2f} s, "
                  f"reference {m.get('timing_s/ref', 0):.2f} s, actor update {m.get('timing_s/update_actor', 0):.2f} s, "
                  f"weight sync {m.get('timing_s/update_weights', 0):.2f} s)")
    later = rows[1:] or rows
    mean_share = sum(r[3] for r in later) / len(later)
    print(f"  medsage's share of a step (steps 2+): {100 * mean_share:.2f} %   (goal <= 5 %)")
    for s, m, _, _ in rows[:4]:
        err = m.get("medsage/first_try_error_rate", float("nan"))
        print(f"  retry cost, step {s}: first-try error rate {err:.2f}, retried {m.get('medsage/self_check_rate', 0):.2f}; "
              f"extra tokens per prompt {ROLLOUTS * m.get('medsage/retry_tokens_per_rollout', 0):.1f}, "
              f"per retried rollout {m.get('medsage/retry_tokens_per_retry', 0):.1f}")


if __name__ == "__main__":
    main()
