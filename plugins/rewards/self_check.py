"""Self-check success reward (paper Eq. 10): r_sc = 1[a1 != y and a2 = y].

Only a retry that turns a wrong first answer into a right one earns it; a response without a
check span scores 0. In training it is not added to the outcome reward: the advantage estimator
(``medsage.plugins.self_check.advantage``) routes α·r_sc to the self-check tokens alone (Eq. 11).
"""

from __future__ import annotations

from medsage.plugins.rewards import RewardInput
from medsage.plugins.rewards.accuracy import answer_correct
from medsage.scaffold import split_retry


def self_check_success(first: str, revised: str, item: RewardInput) -> float:
    """r_sc for a first trajectory and its revision."""
    return 1.0 if (not answer_correct(first, item) and answer_correct(revised, item)) else 0.0


def self_check_reward(item: RewardInput) -> float:
    parts = split_retry(item.response)
    if parts is None:
        return 0.0
    first, _, revised = parts
    return self_check_success(first, revised, item)
