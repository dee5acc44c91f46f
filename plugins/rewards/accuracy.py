"""Accuracy reward (paper A.4): the final answer against the ground truth, by question type.

The answer is read and judged by ``medsage.answers``: closed yes/no on whole words, a choice naming
one option, and an open answer correct when it matches exactly or is semantically consistent with
the reference (``semantic_correct``: token recall over finding words with synonyms, negation and numbers
within a tolerance; ``medsage.answers.SemanticRule``). The synthesis leak check uses the same
function, so a kept trajectory's answer is one this reward scores 1. An answer naming two options,
or none, scores 0.

    medsage rl reward=accuracy reward.params.threshold=0.9 reward.params.metric=recall
    medsage rl reward=accuracy reward.params.open_match=exact     # exact match only
"""

from __future__ import annotations

from typing import Literal

from medsage.answers import DEFAULT_RULE, SemanticRule, extract_answer, score_output, semantic_correct
from medsage.plugins.rewards import RewardInput, final_trajectory


def answer_correct(text: str, item: RewardInput, rule: SemanticRule | None = DEFAULT_RULE) -> bool:
    """Whether ``text`` (one trajectory) answers ``item`` correctly; ``rule=None``: exact match only."""
    if rule is None:
        return score_output(text, item.ground_truth, item.question_type, item.options).correct
    return semantic_correct(extract_answer(text).answer, item.ground_truth, item.question_type, item.options, rule)


class AccuracyReward:
    """``reward=accuracy`` (or a composite component); the parameters are ``SemanticRule``'s."""

    def __init__(self, open_match: Literal["semantic", "exact"] = "semantic", **rule):
        if open_match not in ("semantic", "exact"):
            raise ValueError(f"open_match must be semantic or exact, got {open_match!r}")
        rule = {k: tuple(tuple(g) for g in v) if k.endswith("synonyms") else v for k, v in rule.items()}
        self.rule = SemanticRule(**rule) if open_match == "semantic" else None

    def __call__(self, item: RewardInput) -> float:
        return 1.0 if answer_correct(final_trajectory(item.response), item, self.rule) else 0.0


accuracy_reward = AccuracyReward()  # the default rule, for callers that score without a recipe
