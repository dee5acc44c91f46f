"""Accuracy reward: the final answer against the ground truth, by question type.

Uses the evaluation's own matcher (``medsage.answers.score_output``), so a reward of 1 means exactly
what a correct benchmark item means: closed yes/no on whole words, a choice naming one option,
open answers by normalised exact match. An answer naming two options, or none, scores 0.
"""

from __future__ import annotations

from medsage.answers import score_output
from medsage.plugins.rewards import RewardInput, final_trajectory


def answer_correct(text: str, item: RewardInput) -> bool:
    """Whether ``text`` (one trajectory) answers ``item`` correctly."""
    return score_output(text, item.ground_truth, item.question_type, item.options).correct


def accuracy_reward(item: RewardInput) -> float:
    return 1.0 if answer_correct(final_trajectory(item.response), item) else 0.0
