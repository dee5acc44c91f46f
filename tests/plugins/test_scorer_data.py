"""The scorer's data: hard negatives made from kept trajectories, rejected drafts, the split, AUROC.

Fast: no model is loaded here (the training tests are in test_scorer_train.py).
"""

from __future__ import annotations

import random

import pytest

from medsage.answers import match_answer, normalize
from medsage.launch.demo.samples import make_demo_samples
from medsage.plugins.scorer.data import POSITIVE, examples_from_samples, load_examples, question_text, split, summarize
from medsage.plugins.scorer.negatives import RULES, make_negatives
from medsage.plugins.scorer.train import auroc, evaluate
from medsage.records import Sample, write_records
from medsage.scaffold import STAGES, check_strict


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> list[Sample]:
    return make_demo_samples(tmp_path_factory.mktemp("scorer_demo"), n=16, seed=3)


def test_every_rule_makes_a_valid_but_broken_trajectory(demo):
    negatives = make_negatives(demo, seed=1)
    by_id = {s.id: s for s in demo}
    kinds = {n.kind for n in negatives}
    assert kinds == set(RULES)
    for neg in negatives:
        src = by_id[neg.source_id]
        # The scaffold is intact: a tag checker alone cannot tell these from positives (a shuffle moves
        # the region out of <LOC>, which only the region requirement notices).
        _, issues = check_strict(neg.trajectory.render(), require_region=neg.kind != "shuffled_stages")
        assert issues == [], (neg.kind, issues)
        assert neg.trajectory.render() != src.trajectory.render()
        if neg.kind == "shuffled_stages":
            assert all(getattr(neg.trajectory, k) != getattr(src.trajectory, k) for k in STAGES)
            assert sorted(neg.detail["order"]) == sorted(STAGES)
        elif neg.kind == "swapped_answer":
            assert match_answer(src.trajectory.answer, src.answer, src.question_type, src.options).correct
            assert not match_answer(neg.trajectory.answer, src.answer, src.question_type, src.options).correct
        elif neg.kind == "foreign_knowledge":
            donor = by_id[neg.detail["donor"]]
            assert donor.id != src.id and neg.trajectory.know == donor.trajectory.know
            assert normalize(donor.trajectory.know) != normalize(src.trajectory.know)
        elif neg.kind == "wrong_region":
            (mine,), _ = src.trajectory.regions()
            (theirs,), _ = neg.trajectory.regions()
            y1, x1, y2, x2 = mine.coords
            v1, u1, v2, u2 = theirs.coords
            assert min(y2, v2) < max(y1, v1) or min(x2, u2) < max(x1, u1), "the new region must not overlap"
        elif neg.kind == "contradicted_conclusion":
            assert neg.detail["replaced"] == src.trajectory.con
        # Everything but the broken part is the source's own text.
        changed = [k for k in (*STAGES, "answer") if getattr(neg.trajectory, k) != getattr(src.trajectory, k)]
        expected = {"shuffled_stages": 4, "contradicted_conclusion": 1, "swapped_answer": 1,
                    "foreign_knowledge": 1, "wrong_region": 1}[neg.kind]
        assert len(changed) == expected, (neg.kind, changed)


def test_negatives_are_reproducible_and_rules_checked(demo):
    a = [n.trajectory.render() for n in make_negatives(demo, seed=5)]
    b = [n.trajectory.render() for n in make_negatives(demo, seed=5)]
    c = [n.trajectory.render() for n in make_negatives(demo, seed=6)]
    assert a == b and a != c
    assert {n.kind for n in make_negatives(demo, ["swapped_answer"])} == {"swapped_answer"}
    with pytest.raises(ValueError, match="unknown negative rule"):
        make_negatives(demo, ["nonsense"])


def test_mirrored_region_when_no_donor(demo):
    lone = [demo[0]]  # no other sample to borrow a localisation from
    (neg,) = make_negatives(lone, ["wrong_region"])
    assert neg.detail == {"mirrored": True}
    (orig,), _ = demo[0].trajectory.regions()
    (moved,), _ = neg.trajectory.regions()
    assert moved.coords[0] == orig.coords[0] and moved.coords[1] == 1000 - orig.coords[3]


def _rejected_layout(sample: Sample, reasons_and_texts: list[tuple[list[str], str | None]], rejected: bool) -> Sample:
    """A record as `medsage data synth run` writes it: failed drafts under metadata.synth."""
    s = Sample.from_dict(sample.to_dict())
    s.metadata = {"synth": {"record_id": f"rec-{sample.id}", "failed_attempts": [
        {"reasons": reasons, "trajectory": text} for reasons, text in reasons_and_texts]}}
    if rejected:
        s.rejection = reasons_and_texts[-1][0][0].split(":")[0]
    return s


def test_examples_from_kept_and_rejected_files(demo, tmp_path):
    draft = "<LOC>somewhere</LOC><VISUAL>a bright focus</VISUAL><KNOWLEDGE>x</KNOWLEDGE><CON>y</CON><ANSWER>No</ANSWER>"
    kept = [_rejected_layout(demo[0], [(["answer_contradiction: says no"], draft)], rejected=False), *demo[2:6]]
    rejected_rec = _rejected_layout(demo[1], [(["scaffold_missing_stage: <VISUAL> is missing"], draft),
                                              (["synth_error: timeout"], None)], rejected=True)
    rejected_rec.trajectory = demo[1].trajectory  # e.g. a per-image-cap drop: a good trajectory, never a negative
    write_records(tmp_path / "kept.jsonl", kept)
    write_records(tmp_path / "rejected.jsonl", [rejected_rec])

    examples = load_examples([tmp_path / "kept.jsonl"], [tmp_path / "rejected.jsonl"], rules=("swapped_answer",))
    counts = summarize(examples)
    assert counts[POSITIVE] == 5
    assert counts["rejected:answer_contradiction"] == 1 and counts["rejected:scaffold_missing_stage"] == 1
    assert counts["swapped_answer"] == 5
    # The rejected record's own trajectory is not a positive, and an attempt without text gives nothing.
    assert sum(counts.values()) == 5 + 2 + 5
    drafts = [e for e in examples if e.kind.startswith("rejected:")]
    assert all(e.label == 0 and e.trajectory.answer == "No" for e in drafts)
    assert {e.group for e in drafts} == {f"rec-{demo[0].id}", f"rec-{demo[1].id}"}
    # A kept record's drafts share its group with its positive (they are its hardest negatives).
    pos0 = next(e for e in examples if e.source_id == demo[0].id and e.label == 1)
    assert pos0.group == f"rec-{demo[0].id}"


def test_split_keeps_records_together_and_is_stable(demo):
    examples = examples_from_samples(demo)
    train, held = split(examples, 0.25, seed=0)
    assert {e.group for e in train}.isdisjoint({e.group for e in held})
    assert len(train) + len(held) == len(examples) and held and train
    again = split(examples_from_samples(list(reversed(demo))), 0.25, seed=0)[1]
    assert {e.group for e in again} == {e.group for e in held}
    with pytest.raises(ValueError):
        split(examples, 1.0, seed=0)


def test_question_text_is_the_prompt_the_samples_use(demo):
    for s in demo:
        assert question_text(s.question, s.options) == s.prompt_text()


def test_auroc_matches_pairwise_counting():
    rng = random.Random(0)
    for _ in range(20):
        pos = [round(rng.random(), 1) for _ in range(rng.randint(1, 12))]
        neg = [round(rng.random(), 1) for _ in range(rng.randint(1, 12))]
        brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        assert auroc(pos, neg) == pytest.approx(brute)
    assert auroc([], [0.1]) is None


def test_evaluate_reports_each_kind(demo):
    examples = examples_from_samples(demo)
    # A scorer that only recognises shuffled stages: perfect on that kind, chance-like elsewhere.
    scores = [0.0 if e.kind == "shuffled_stages" else 0.9 for e in examples]
    report = evaluate(examples, scores)
    assert report["shuffled_stages"]["auroc"] == 1.0 and report["shuffled_stages"]["pairwise"] == 1.0
    assert report["swapped_answer"]["auroc"] == 0.5
    assert report["positive"]["accuracy"] == 1.0
    assert report["rule_made"]["n"] == sum(e.label == 0 for e in examples)
    assert 0.5 < report["rule_made"]["auroc"] < 1.0
