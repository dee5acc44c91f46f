"""Hard negatives made from kept trajectories, each recording how it was made (paper A.4).

A kept trajectory is right in form and in content; each rule below breaks exactly one kind of
consistency while leaving the scaffold valid, so a scorer cannot win by checking tags alone:

- ``shuffled_stages``: the four stage texts are permuted (a derangement), so the localisation is no
  longer in ``<LOC>`` and the conclusion no longer closes the chain;
- ``contradicted_conclusion``: the conclusion states a normal study, against the visual analysis
  (the answer is left as it was, so the conclusion no longer supports it either);
- ``swapped_answer``: the answer becomes another option (choice), the opposite (yes/no), or another
  sample's different answer (open); ``medsage.answers`` confirms it is now wrong;
- ``foreign_knowledge``: the knowledge stage comes from another sample with a different answer,
  so it supports that answer rather than this one;
- ``wrong_region``: the localisation comes from another sample whose region does not overlap this
  one (different place, different box); when no such donor exists the boxes are mirrored.

Donors are other positives of the same pool, so the negatives use the pool's own vocabulary and a
scorer must read the chain to separate them. Every negative names its source, its rule and, in
``detail``, the donor or the permutation: a training run can always be traced back.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from medsage.answers import decide_yes_no, match_answer, match_choice, normalize
from medsage.records import Sample
from medsage.scaffold import GRID, STAGES, Region, Trajectory

RULES: tuple[str, ...] = ("shuffled_stages", "contradicted_conclusion", "swapped_answer", "foreign_knowledge",
                          "wrong_region")

# Conclusions that call the study normal. Several phrasings, so a scorer cannot key on one sentence;
# each contradicts a visual analysis that describes a finding.
_NORMAL_CONCLUSIONS = (
    "No abnormality is seen; the study appears normal.",
    "The tissue looks unremarkable and no focal lesion is present.",
    "There is no finding of note, so the image is within normal limits.",
    "Nothing abnormal is identified in this region, which appears healthy.",
    "The appearance is normal and excludes any lesion.",
)


@dataclass
class Negative:
    """One generated negative: the broken trajectory, the rule that broke it and how."""

    trajectory: Trajectory
    kind: str                    # one of RULES
    source_id: str               # the positive it was made from
    detail: dict = field(default_factory=dict)  # donor id, permutation, replaced text, ...


def _copy(t: Trajectory, **changes: str) -> Trajectory:
    return Trajectory(**{**t.to_dict(), **changes})


def _answer_key(s: Sample) -> str:
    """What a sample answers, for "a different answer": the option text for choices, else the answer."""
    if s.options and s.answer in s.options:
        return normalize(s.options[s.answer])
    return normalize(s.answer)


def _shuffled(s: Sample, rng: random.Random, pool: list[Sample]) -> Negative | None:
    t = s.trajectory
    texts = [getattr(t, k) for k in STAGES]
    if len({normalize(x or "") for x in texts}) < len(texts):
        return None  # two identical stages: a permutation might change nothing
    order = list(range(len(STAGES)))
    while any(i == j for i, j in enumerate(order)):  # a derangement: every stage moves
        rng.shuffle(order)
    moved = {STAGES[i]: texts[j] for i, j in enumerate(order)}
    return Negative(_copy(t, **moved), "shuffled_stages", s.id,
                    {"order": [STAGES[j] for j in order]})


def _contradicted(s: Sample, rng: random.Random, pool: list[Sample]) -> Negative | None:
    con = rng.choice(_NORMAL_CONCLUSIONS)
    return Negative(_copy(s.trajectory, con=con), "contradicted_conclusion", s.id,
                    {"replaced": s.trajectory.con, "with": con})


def _swapped_answer(s: Sample, rng: random.Random, pool: list[Sample]) -> Negative | None:
    t = s.trajectory
    detail: dict = {"replaced": t.answer}
    if s.question_type == "choice" and s.options:
        said, _ = match_choice(t.answer or "", s.options)
        others = sorted(k for k in s.options if k != (said or s.answer))
        if not others:
            return None
        letter = rng.choice(others)
        # Keep the trajectory's own style: a bare letter stays a bare letter.
        new = letter if (t.answer or "").strip().upper() == (said or "") else f"{letter}. {s.options[letter]}"
        detail["option"] = letter
    elif s.question_type == "closed" and decide_yes_no(s.answer)[0] is not None:
        new = "No" if decide_yes_no(s.answer)[0] == "yes" else "Yes"
    else:
        donors = [d for d in pool if d.id != s.id and d.trajectory and d.trajectory.answer
                  and normalize(d.trajectory.answer) != normalize(t.answer or "")]
        if not donors:
            return None
        donor = rng.choice(donors)
        new, detail["donor"] = donor.trajectory.answer, donor.id
    if match_answer(new, s.answer, s.question_type, s.options).correct:
        return None  # still right (e.g. a synonym): not a negative
    detail["with"] = new
    return Negative(_copy(t, answer=new), "swapped_answer", s.id, detail)


def _foreign_knowledge(s: Sample, rng: random.Random, pool: list[Sample]) -> Negative | None:
    own = normalize(s.trajectory.know or "")
    donors = [d for d in pool if d.id != s.id and d.trajectory and d.trajectory.know
              and _answer_key(d) != _answer_key(s) and normalize(d.trajectory.know) != own]
    if not donors:
        return None
    donor = rng.choice(donors)
    return Negative(_copy(s.trajectory, know=donor.trajectory.know), "foreign_knowledge", s.id,
                    {"donor": donor.id, "donor_answer": donor.answer})


def _overlaps(a: list[Region], b: list[Region]) -> bool:
    """Any box of ``a`` intersecting any box of ``b`` (points count as zero-size boxes)."""

    def box(r: Region) -> tuple[int, ...]:
        return r.coords if r.kind == "box" else (*r.coords, *r.coords)

    for ra in a:
        for rb in b:
            y1, x1, y2, x2 = box(ra)
            v1, u1, v2, u2 = box(rb)
            if min(y2, v2) >= max(y1, v1) and min(x2, u2) >= max(x1, u1):
                return True
    return False


def _wrong_region(s: Sample, rng: random.Random, pool: list[Sample]) -> Negative | None:
    t = s.trajectory
    own, _ = t.regions()
    if not own:
        return None  # nothing localised: a wrong region cannot be told from a right one
    donors = []
    for d in pool:
        if d.id == s.id or not d.trajectory or not d.trajectory.loc:
            continue
        theirs, _ = d.trajectory.regions()
        if theirs and not _overlaps(own, theirs) and normalize(d.trajectory.loc) != normalize(t.loc):
            donors.append(d)
    if donors:
        donor = rng.choice(donors)
        return Negative(_copy(t, loc=donor.trajectory.loc), "wrong_region", s.id, {"donor": donor.id})
    # No donor: mirror every region left-right, in place in the text when it was written canonically.
    loc = t.loc
    for r in own:
        if r.kind == "box":
            y1, x1, y2, x2 = r.coords
            mirrored = Region("box", (y1, GRID - x2, y2, GRID - x1), r.label)
        else:
            y, x = r.coords
            mirrored = Region("point", (y, GRID - x), r.label)
        if r.to_json() not in loc or _overlaps([r], [mirrored]):
            return None
        loc = loc.replace(r.to_json(), mirrored.to_json())
    return Negative(_copy(t, loc=loc), "wrong_region", s.id, {"mirrored": True})


_MAKERS: dict[str, Callable[[Sample, random.Random, list[Sample]], Negative | None]] = {
    "shuffled_stages": _shuffled,
    "contradicted_conclusion": _contradicted,
    "swapped_answer": _swapped_answer,
    "foreign_knowledge": _foreign_knowledge,
    "wrong_region": _wrong_region,
}


def make_negatives(positives: list[Sample], rules: tuple[str, ...] | list[str] = RULES,
                   per_rule: int = 1, seed: int = 0) -> list[Negative]:
    """Up to ``per_rule`` negatives of each rule for every positive that has a complete trajectory.

    A rule that cannot apply to a sample (no other option, no donor, no region) makes nothing for
    it rather than a weak negative; the data summary (``data.summarize``) counts each kind.
    """
    unknown = sorted(set(rules) - set(_MAKERS))
    if unknown:
        raise ValueError(f"unknown negative rule(s) {unknown}; available: {', '.join(RULES)}")
    pool = [s for s in positives if s.trajectory is not None and s.trajectory.complete]
    out: list[Negative] = []
    for s in pool:
        # One generator per sample: adding samples to the pool does not change another sample's negatives' rules.
        rng = random.Random(f"{seed}:{s.id}")
        for rule in rules:
            seen: set[str] = set()
            for _ in range(per_rule):
                neg = _MAKERS[rule](s, rng, pool)
                if neg is None:
                    break
                key = neg.trajectory.render()
                if key in seen or key == s.trajectory.render():
                    continue
                seen.add(key)
                out.append(neg)
    return out
