"""Format reward: the strict LVKC structure, checked by the scaffold (paper A.4).

1.0 when the scored trajectory has every stage in order, each non-empty, the answer present and a
valid region (box or point) inside ``<LOC>`` (the stage's key information); 0.0 otherwise. No
textual overlap with any reference is asked for. A retry is judged on its revised trajectory.
"""

from __future__ import annotations

from medsage.plugins.rewards import RewardInput, final_trajectory
from medsage.scaffold import check_strict


def format_reward(item: RewardInput) -> float:
    _, issues = check_strict(final_trajectory(item.response).strip(), require_region=True)
    return 0.0 if issues else 1.0
