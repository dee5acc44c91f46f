"""Which (RoI, template) units to draft, chosen before any call is paid for (§3.1 RPA, SAGE-sft's size).

M RoIs x T templates give ~24 candidate units per boxed record, while an image keeps at most
``max_per_image`` trajectories and SAGE-sft has a target size (20,000 in the paper recipes). Drafting
every candidate and capping afterwards throws most of the paid calls away, so the order is fixed first:

- within an image, round-robin over its RoIs, then over templates (the first unit of every RoI, then
  the second, ...), so a capped image still spreads over RoIs and templates;
- across images, rank by rank (every image's first unit before any image's second), images in a seeded
  shuffle, so a target smaller than the pool spreads over the images rather than filling the first ones.

``Draw`` then hands out rounds: as many units as are still missing (to the target, and to each image's
cap), in that order. A unit that ends rejected, or whose trajectory duplicates a kept one, frees its
place and the next round drafts a replacement; candidates never needed are never drafted.
"""

from __future__ import annotations

import random
from collections import Counter

from medsage.answers import normalize
from medsage.data_pipeline.synthesis.rpa import Unit
from medsage.scaffold import Trajectory


def draw_order(units: list[Unit], seed: int = 0) -> list[Unit]:
    """The drafting order of ``units`` (see the module text); deterministic for a seed."""
    by_image: dict[tuple[str, ...], list[Unit]] = {}
    for u in units:
        by_image.setdefault(tuple(u.sample.images), []).append(u)
    images = sorted(by_image)
    random.Random(f"draw:{seed}").shuffle(images)
    keyed = []
    for position, image in enumerate(images):
        seen: Counter = Counter()
        for n, u in enumerate(by_image[image]):
            roi_key = (u.sample.id, u.roi_index)
            keyed.append(((seen[roi_key], position, n), u))  # rank within its RoI, image, plan order
            seen[roi_key] += 1
    # Rank by rank over every RoI of an image, then image by image.
    return [u for _, u in sorted(keyed, key=lambda kv: kv[0])]


def trajectory_key(traj: Trajectory) -> str:
    """Two trajectories with this key equal are duplicates (case, spacing and punctuation aside)."""
    return normalize(traj.render())


class Draw:
    """The rounds of units to draft, toward ``target`` kept trajectories and ``cap`` per image."""

    def __init__(self, order: list[Unit], cap: int | None, target: int | None):
        if cap is not None and cap < 1:
            raise ValueError(f"max_per_image must be >= 1, got {cap}")
        if target is not None and target < 1:
            raise ValueError(f"target must be >= 1 (or null for no target), got {target}")
        self.queue, self.cap, self.target = list(order), cap, target
        self.per_image: Counter = Counter()  # kept trajectories per image
        self.kept = 0
        self.rounds = 0
        self._seen: set[str] = set()

    def next_round(self) -> list[Unit]:
        """The next units to draft (empty when the target is met or no candidate may still be drafted)."""
        need = len(self.queue) if self.target is None else self.target - self.kept
        taken: Counter = Counter()
        batch, rest = [], []
        for u in self.queue:
            image = tuple(u.sample.images)
            room = self.cap is None or self.per_image[image] + taken[image] < self.cap
            if len(batch) < need and room:
                batch.append(u)
                taken[image] += 1
            else:
                rest.append(u)
        self.queue = rest
        self.rounds += bool(batch)
        return batch

    def accept(self, unit: Unit, traj: Trajectory) -> bool:
        """Count a verified trajectory as kept; False for a duplicate of one already kept for the same image
        and question. Across images identical text is no copy: a whole-image <LOC> on two negative slices
        reads the same and both are needed."""
        key = (tuple(unit.sample.images), unit.sample.question, trajectory_key(traj))
        if key in self._seen:
            return False
        self._seen.add(key)
        self.per_image[tuple(unit.sample.images)] += 1
        self.kept += 1
        return True
