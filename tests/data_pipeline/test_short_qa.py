"""PubMedVision's paragraph answers become short, checkable questions (modality, body part, laterality, finding),
with the caption kept as context and the per-rule counts in the data run's summary."""

from __future__ import annotations

import json
import random

import pytest

from medsage.answers import match_answer
from medsage.data_pipeline.short_qa import RULES, NoShortQA, body_part, derive, finding, laterality, modality
from medsage.launch.demo.sources import make_pubmedvision

CAPTION = "A mass in the right lower lobe (white arrow) with pleural thickening."
FIELDS = {"modality": "Computed Tomography", "body_part": "Chest"}


def rng():
    return random.Random(0)


def test_each_rule_reads_what_the_text_supports():
    m = modality(CAPTION, FIELDS, rng())
    assert m.question_type == "choice" and m.options[m.answer] == "CT" and len(m.options) == 4
    knee = modality("Axial T2-weighted image of the knee.", {}, rng())
    assert knee.options[knee.answer] == "MRI"
    assert modality("A photo.", {}, rng()) is None
    assert body_part(CAPTION, FIELDS, rng()).answer == "chest"
    assert body_part("Fracture of the left femur.", {}, rng()).answer == "lower limb"
    lat = laterality(CAPTION, FIELDS, rng())
    assert lat.options[lat.answer] == "Right"
    assert laterality("Cysts in the left and right kidneys.", {}, rng()) is None  # both sides: no single answer
    assert laterality("Bilateral hilar lymphadenopathy.", {}, rng()) is None
    assert finding(CAPTION, {}, rng()).question == "Is there a mass in this image?"
    assert finding(CAPTION, {}, rng()).answer == "yes"
    neg = finding("There is no pleural effusion. The heart is normal.", {}, rng())
    assert (neg.question, neg.answer) == ("Is there a pleural effusion in this image?", "no")
    assert finding("No focal abnormality is visible.", {}, rng()).answer == "no"
    assert finding("Nodules are seen; no effusion.", {}, rng()).answer == "yes"  # the negation is another clause
    assert finding("Normal study.", {}, rng()) is None


def test_only_paragraph_answers_are_captions():
    from medsage.data_pipeline.short_qa import is_caption

    assert is_caption("open", CAPTION) and not is_caption("open", "left kidney") and not is_caption("closed", "yes")


def test_rules_rotate_over_inputs_and_unsupported_text_is_dropped():
    rules = [derive(CAPTION, FIELDS, i, rng()).rule for i in range(4)]
    assert rules == list(RULES)  # each rule serves its share of the source
    assert derive("Normal study of the knee.", {}, 2, rng()).rule == "body_part"  # falls through to what fits
    with pytest.raises(NoShortQA):
        derive("Image.", {}, 0, rng())


def test_data_run_asks_short_questions_and_counts_rules(tmp_path):
    from medsage.data_pipeline.run import RunConfig, run

    root = make_pubmedvision(tmp_path / "PMV", n=9)
    items = json.loads((root / "PubMedVision_Alignment_VQA.json").read_text())
    items[0]["conversations"] = [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "An illustration of unclear content is provided here."}]
    items[0]["modality"] = items[0]["body_part"] = None
    (root / "PubMedVision_Alignment_VQA.json").write_text(json.dumps(items))
    summary = run(RunConfig.from_dict({"out_dir": str(tmp_path / "out"), "sources": [
        {"name": "pubmedvision", "root": str(root)}], "dedup": {"within_train": False}}))
    counts = summary["short_qa"]["pubmedvision"]
    per = summary["sources"]["pubmedvision"]
    assert counts["dropped"] == per["rejected_by_reason"]["no-short-qa"] == 1
    assert sum(counts["produced"].values()) == per["kept"] == 9 - 2  # one dropped, one image missing
    assert set(counts["produced"]) <= set(RULES) and len(counts["produced"]) >= 3  # rules share the source
    from medsage.records import read_records

    for s in read_records(tmp_path / "out" / "records.jsonl"):
        assert s.metadata["context"]["caption"] and s.metadata["short_qa"]["rule"] in RULES
        assert len(s.answer.split()) <= 2  # short and checkable
        ref = s.options[s.answer] if s.options else s.answer
        assert match_answer(ref if s.question_type != "choice" else s.answer, s.answer, s.question_type,
                            s.options).correct
