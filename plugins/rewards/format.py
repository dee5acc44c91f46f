"""Format reward (paper A.4): stage completeness, structural correctness and each stage's key information.

1.0 when the scored trajectory has every stage in order, each non-empty, one answer, and a
``<LOC>`` that names a region: a valid box or point, or a textual region (SFT keeps text-RoI
trajectories, A.3.1 treats both as valid region representations). Free text before ``<LOC>``
(every Figure 12 output opens with one) is allowed; text between or after the tags is not. No
textual overlap with any reference is asked for. A retry is judged on its revised trajectory.
"""

from __future__ import annotations

from medsage.plugins.rewards import RewardInput, final_trajectory
from medsage.scaffold import check_strict


def format_reward(item: RewardInput) -> float:
    trajectory, issues = check_strict(final_trajectory(item.response).strip(), allow_preamble=True)
    return 1.0 if not issues and trajectory.names_region() else 0.0
