"""RL learns: a short plain-GRPO run of verl's own trainer (CPU route) raises the mean training reward of a batch
the SFT model gets partly wrong.

The smallest honest construction: four yes/no questions on generated slices ("is there a lesion in <the organ
that has it>?", all answered yes), a real LLaMA-Factory SFT of the tiny random model on each question with BOTH
answers, so it answers yes or no about equally often (a batch it gets about half right), then
`medsage rl rl=grpo reward=accuracy` on the same four questions, repeated. Nothing is test-made: the reward is
medsage's accuracy reward, each step's reward is verl's own metric (``critic/score/mean`` in metrics.jsonl, the
raw accuracy: this reward is not normalised). What it proves is the loop: rollouts scored, group advantages,
the actor updated and its weights synced to the rollout server, so the policy moves towards the reward. That RL
learns to read the image is bench/bench_learning.py's to show. With questions answered half yes and half no the
64-wide model did not separate them within 20 steps (measured), so every answer here is yes.
Measured on 2 cores, 20 steps of 2 x 4 at lr 5e-4 (the first construction): first and last 5 steps' reward
0.55 -> 0.80, 0.48 -> 0.90, 0.58 -> 0.90, 0.775 -> 0.90, and once 0.75 -> 0.775 (the policy moved, then drifted back
at that lr): too noisy to assert on. Now 40 steps of 2 x 8 at lr 3e-4: 0.70 -> 0.95 (first and last 8 steps).
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("verl")
pytest.importorskip("llamafactory")
pytestmark = pytest.mark.slow

from rl_run import run_rl

STEPS = 40     # optimiser steps of 2 prompts x 8 rollouts: each question is seen 20 times
WINDOW = 8     # the first and the last WINDOW steps' mean rewards are compared (128 rollouts each)


def yes_no_questions(tmp_path, n=4):
    """``n`` closed questions on generated slices, each naming the organ that holds the lesion (answer: yes)."""
    from medsage.launch.demo.samples import make_demo_samples

    return [s for s in make_demo_samples(tmp_path / "demo", n=3 * n) if s.question_type == "closed"][:n]


def both_answers_sft(samples, dataset_dir):
    """A LLaMA-Factory dataset with every question twice, answered "yes" and "no": what SFT learns from it is the
    answer's form, not which answer is right."""
    from medsage.data_pipeline.writers import sft_example

    from medsage.prompts import PromptConfig

    prompt = PromptConfig.load()
    rows = []
    for s in samples:
        for answer in ("yes", "no"):
            row = sft_example(s, prompt, dataset_dir)
            row["conversations"][-1]["value"] = answer
            rows.append({**row, "id": f"{s.id}-{answer}"})
    (dataset_dir / "both.json").write_text(json.dumps(rows))
    (dataset_dir / "dataset_info.json").write_text(json.dumps({"both": {
        "file_name": "both.json", "formatting": "sharegpt", "columns": {"messages": "conversations", "images": "images"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "system_tag": "system"}}}))
    return "both"


def test_grpo_raises_the_training_reward(tmp_path, tiny_model_dir):
    from medsage.data_pipeline.writers import write_verl_parquet
    from medsage.launch.rl_metrics import read_steps
    from medsage.launch.sft import run_sft

    samples = yes_no_questions(tmp_path)
    assert len(samples) == 4 and {s.answer.lower() for s in samples} == {"yes"}
    dataset = both_answers_sft(samples, tmp_path / "demo")
    sft = run_sft(["model=tiny", f"model.path={tiny_model_dir}", "sft=tiny_cpu", "cluster=local_cpu",
                   f"data.dataset_dir={tmp_path / 'demo'}", f"data.dataset={dataset}", f"output.dir={tmp_path / 'sft'}",
                   "sft.num_train_epochs=20", "sft.learning_rate=3.0e-3"], stream=False)
    assert sft.status == "finished"

    data = write_verl_parquet(samples, tmp_path / "rl.parquet")
    out, rc, log = run_rl(tmp_path, sft.run_dir, data, "rl=grpo", "reward=accuracy", "rl.rollout_n=8",
                          "rl.micro_batch_per_device=8", "rl.log_prob_micro_batch=16", "rl.max_response_length=8",
                          "rl.epochs=100", "rl.lr=3.0e-4", "rl.save_freq=-1", steps=STEPS)
    assert rc == 0, log[-8000:]
    steps = read_steps(out / "metrics.jsonl")
    assert sorted(steps) == list(range(1, STEPS + 1)), log[-4000:]
    reward = [steps[i]["critic/score/mean"] for i in sorted(steps)]
    first, last = sum(reward[:WINDOW]) / WINDOW, sum(reward[-WINDOW:]) / WINDOW
    # the SFT model gets the batch partly wrong: room to learn, and a reward that varies within a group
    assert 0.1 <= first <= 0.8, reward
    # GRPO moved the policy towards the rewarded answer: it closed at least half of the room it had (a fixed +0.2
    # asked for a larger share of a smaller room when the five first steps, 40 rollouts, happened to score high:
    # 0.775 -> 0.9 failed it once)
    assert last - first >= max(0.1, (1.0 - first) / 2), reward
