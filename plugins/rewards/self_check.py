"""Self-check success reward (paper Eq. 10): r_sc = 1[a1 != y and a2 = y].

Only a retry that turns a wrong first answer into a right one earns it; a response without a
check span scores 0. "Right" is the run's one accuracy rule (``AccuracyReward.correct`` with the
reward recipe's parameters, ``medsage.plugins.rewards.accuracy.recipe_accuracy``), the same that
scores the outcome and triggers the retry. In training r_sc is not added to the outcome reward: the
agent loop records it and the advantage estimator (``medsage.plugins.self_check.advantage``) gives
α·r_sc to the self-check tokens alone (Eq. 11).
"""

from __future__ import annotations

from typing import Any

from medsage.plugins.rewards import RewardInput
from medsage.plugins.rewards.accuracy import AccuracyReward
from medsage.scaffold import split_retry


def self_check_success(first_correct: bool, revised_correct: bool) -> float:
    """Eq. 10 from the two accuracy decisions: r_sc = 1[a1 != y and a2 = y]."""
    return 1.0 if (not first_correct and revised_correct) else 0.0


class SelfCheckReward:
    """``reward=self_check`` (or a composite component); the parameters are ``AccuracyReward``'s: the
    rule that decides a1 != y and a2 = y (a composite gives it its accuracy component's)."""

    def __init__(self, **accuracy: Any):
        self.accuracy = AccuracyReward(**accuracy)

    def __call__(self, item: RewardInput) -> float:
        parts = split_retry(item.response)
        if parts is None:
            return 0.0
        first, _, revised = parts
        return self_check_success(self.accuracy.correct(first, item), self.accuracy.correct(revised, item))
