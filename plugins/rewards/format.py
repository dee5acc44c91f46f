"""Format reward (paper A.4): stage completeness, structural correctness and each stage's key information.

Structure: the scored trajectory has every stage in order, each non-empty, one answer, and a ``<LOC>``
that names a region: a valid box or point, or a textual region (SFT keeps text-RoI trajectories, A.3.1
treats both as valid region representations). Free text before ``<LOC>`` (every Figure 12 output opens
with one) is allowed; text between or after the tags is not. A trajectory that fails the structure
scores 0. A retry is judged on its revised trajectory.

Key information (A.4: "the reference trajectory is segmented into the four stages to define the format
reward"): the RL row's ``extra_info.reference`` holds the record's own trajectory by stage. A stage keeps
its key information when it shares at least one finding word with the same stage of the reference
(``medsage.answers.semantic_tokens``: synonyms unified; carrier words, yes/no and words under three letters
dropped; for ``<LOC>`` the
region labels and the words around the region JSON): the ``<LOC>`` names the reference region's anatomy
or label, ``<VISUAL>`` its finding, ``<KNOWLEDGE>`` its fact, ``<CON>`` its conclusion. No wording is asked
for beyond one shared finding word per stage.

    format = 0                                       structure fails
           = (1 - key_info) + key_info * kept / n    n reference stages with finding words, kept of them

``key_info`` is the weight of the key-information part (``reward.params.components.format.key_info``);
a row without a reference is scored on its structure alone.
"""

from __future__ import annotations

import re

from medsage.plugins.rewards import RewardInput, final_trajectory
from medsage.scaffold import STAGES, Trajectory, check_strict

_REGION_JSON = re.compile(r"\{[^{}]*\}")
_NOT_KEY = {"yes", "no", "not_yes", "not_no"}


def key_words(trajectory: Trajectory, stage: str) -> set[str]:
    """A stage's finding words; ``<LOC>``: its region labels and the words outside the region JSON."""
    from medsage.answers.semantic import semantic_tokens

    text = getattr(trajectory, stage) or ""
    if stage == "loc":
        regions, _ = trajectory.regions()
        text = " ".join([_REGION_JSON.sub(" ", text), *(r.label for r in regions if r.label)])
    return {w for w in semantic_tokens(text)[0] if w not in _NOT_KEY and len(w.removeprefix("not_")) >= 3}


def key_information(trajectory: Trajectory, reference: dict | None) -> tuple[int, int]:
    """(stages keeping the reference's key information, reference stages that have some)."""
    if not reference:
        return 0, 0
    ref = Trajectory(**{k: reference.get(k) for k in STAGES})
    kept = total = 0
    for stage in STAGES:
        wanted = key_words(ref, stage)
        if wanted:
            total += 1
            kept += bool(wanted & key_words(trajectory, stage))
    return kept, total


class FormatReward:
    """``reward=format`` (or a composite component); ``key_info`` is the weight of the key-information part."""

    def __init__(self, key_info: float = 0.0):
        if not 0.0 <= float(key_info) <= 1.0:
            raise ValueError(f"format key_info weight must be within [0, 1], got {key_info}")
        self.key_info = float(key_info)

    def __call__(self, item: RewardInput) -> float:
        trajectory, issues = check_strict(final_trajectory(item.response).strip(), allow_preamble=True)
        if issues or not trajectory.names_region():
            return 0.0
        kept, total = key_information(trajectory, item.extra.get("reference"))
        return 1.0 - self.key_info + (self.key_info * kept / total if total else self.key_info)
