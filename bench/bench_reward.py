"""Reward throughput: medsage's composite reward vs a MedVLM-R1-style <think>/<answer> regex reward.

    python bench/bench_reward.py [--n 3000]

Both score the same responses (LVKC trajectories, self-check retries, malformed and plain-text
outputs) on one core. Prints responses/s for each, their ratio, and the time the composite needs
for one R-GRPO step of the paper's setting (12 prompts x 6 rollouts per update on 4 GPUs) and for
a large 512 x 6 batch: the reward must never be the step's bottleneck (a vLLM rollout of 1024
tokens takes seconds).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time

from medsage.plugins.rewards import RewardInput
from medsage.plugins.rewards.composite import CompositeReward
from medsage.scaffold import render, render_check

# MedVLM-R1's reward: format = the whole output is <think>...</think><answer>...</answer>; accuracy =
# the letter inside <answer> equals the reference. Regexes of that kind, compiled once.
_R1_FORMAT = re.compile(r"^<think>.*?</think>\s*<answer>.*?</answer>$", re.DOTALL)
_R1_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def r1_regex_reward(response: str, ground_truth: str) -> float:
    fmt = 1.0 if _R1_FORMAT.match(response.strip()) else 0.0
    m = _R1_ANSWER.search(response)
    acc = 1.0 if m and m.group(1).strip().lower() == ground_truth.strip().lower() else 0.0
    return fmt + acc


def make_responses(n: int, seed: int = 0) -> list[RewardInput]:
    rng = random.Random(seed)
    words = "lesion liver lung nodule margin bright dense opacity right upper lobe cortex enhancement".split()

    def sentence(k):
        return " ".join(rng.choice(words) for _ in range(k)).capitalize() + "."

    def trajectory(answer):
        box = f'{{"box_2d": [{rng.randrange(0, 400)}, {rng.randrange(0, 400)}, {rng.randrange(500, 999)}, ' \
              f'{rng.randrange(500, 999)}], "label": "{rng.choice(words)}"}}'
        return render(box, sentence(40), sentence(40), sentence(25) + f" So {answer}.", answer)

    items = []
    for i in range(n):
        kind = i % 5
        qtype, gt, options = [("closed", "yes", None), ("choice", "B", {"A": "Lung", "B": "Liver", "C": "Kidney"}),
                              ("open", "computed tomography", None)][i % 3]
        answer = rng.choice({"closed": ["yes", "no"], "choice": ["A", "B", "Liver"],
                             "open": ["computed tomography", "MRI"]}[qtype])
        if kind in (0, 1):
            text = trajectory(answer)
        elif kind == 2:  # a self-check retry
            text = trajectory("no") + "user\nplease check\nassistant\n" + render_check(sentence(60)) + trajectory(answer)
        elif kind == 3:  # malformed: truncated mid-stage
            text = trajectory(answer)[: rng.randrange(50, 400)]
        else:  # a MedVLM-R1-style output
            text = f"<think>{sentence(80)}</think><answer>{answer}</answer>"
        items.append(RewardInput(text, gt, qtype, options))
    return items


def rate(fn, items, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for it in items:
            fn(it)
        best = min(best, time.perf_counter() - start)
    return len(items) / best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    items = make_responses(args.n)
    composite = CompositeReward(weights={"accuracy": 1.0, "format": 0.5, "consistency": 0.5})
    base = CompositeReward(weights={"accuracy": 1.0, "format": 0.5})
    r_comp = rate(composite, items)
    r_base = rate(base, items)
    r_regex = rate(lambda it: r1_regex_reward(it.response, it.ground_truth), items)
    print(f"responses: {len(items)} (LVKC, retries, truncated, <think>/<answer>), one core")
    print(f"regex <think>/<answer> reward     : {r_regex:12,.0f} responses/s")
    print(f"composite accuracy+format (paper) : {r_base:12,.0f} responses/s   ratio regex/composite = {r_regex / r_base:6.1f}x")
    print(f"composite + consistency (rule)    : {r_comp:12,.0f} responses/s   ratio regex/composite = {r_regex / r_comp:6.1f}x")
    for prompts, label in ((12, "paper R-GRPO update, 4 GPUs"), (512, "large rollout batch")):
        seqs = prompts * 6
        print(f"{label:30s}: {seqs:5d} rollouts scored in {1000 * seqs / r_comp:8.1f} ms on one core")


if __name__ == "__main__":
    main()
