"""Score modes beside the headline: closed-only accuracy and the MedEvalKit-compatible mode."""

from __future__ import annotations

import pytest

from medsage.answers import medevalkit_verdict
from medsage.eval.scoring import KNOWN_DIFFERENCES, score_item, summarize

CHOICE = {"A": "Pneumonia", "B": "Pneumothorax", "C": "Effusion"}


def _item(prediction, answer, kind, options=None):
    return {"benchmark": "b", "id": prediction[:10], "prediction": prediction, "answer": answer,
            "answer_type": kind, "options": options}


@pytest.mark.parametrize("output, answer, kind, expected", [
    ("<ANSWER>No</ANSWER>", "no", "closed", True),
    ("The lesion is not visible.", "no", "closed", True),       # 'no' inside 'not'
    ("Answer: I know it is yes", "yes", "closed", False),       # 'no' inside 'know' and 'yes': both
    ("\\boxed{yes}", "yes", "closed", True),
    ("Answer: liver", "liver", "open", False),                  # a leading space after the marker
    ("liver", "Liver", "open", True),
    ("Answer: the liver", "liver", "open", False),              # no article removal
    ("left.", "left", "closed", True),                          # a closed non-yes/no reference: exact text
    ("B", "B", "choice", True),
    ("The answer is C. Effusion", "C", "choice", True),
    ("probably pneumoni", "A", "choice", True),                 # most similar option
    ("pneumothorax", "A", "choice", False),
])
def test_medevalkit_rules(output, answer, kind, expected):
    correct, rule = medevalkit_verdict(output, answer, kind, CHOICE if kind == "choice" else None)
    assert correct is expected and rule in KNOWN_DIFFERENCES


def test_each_disagreement_names_its_known_difference():
    v = score_item(_item("The lesion is not visible.", "no", "closed"))
    assert v["correct"] is False and v["medevalkit"] is True
    assert "substring" in v["medevalkit_differs"]
    v = score_item(_item("Answer: the liver", "liver", "open"))
    assert v["correct"] is True and v["medevalkit"] is False and "leading space" in v["medevalkit_differs"]
    v = score_item(_item("probably pneumoni", "A", "choice", CHOICE))
    assert v["correct"] is False and v["medevalkit"] is True and "most similar" in v["medevalkit_differs"]
    agree = score_item(_item("<ANSWER>yes</ANSWER>", "yes", "closed"))
    assert agree["medevalkit"] is True and "medevalkit_differs" not in agree


def test_summary_reports_closed_only_and_medevalkit_beside_the_headline():
    items = [_item("<ANSWER>yes</ANSWER>", "yes", "closed"), _item("<ANSWER>no</ANSWER>", "yes", "closed"),
             _item("<ANSWER>liver</ANSWER>", "liver", "open"), _item("<ANSWER>spleen</ANSWER>", "liver", "open"),
             _item("<ANSWER>B</ANSWER>", "B", "choice", CHOICE), _item("Answer: the liver", "liver", "open")]
    s = summarize([score_item(i) for i in items])["b"]
    assert s["accuracy"] == pytest.approx(100 * 4 / 6, abs=0.01)
    assert s["closed_only_accuracy"] == pytest.approx(100 * 2 / 3, abs=0.01)  # 2 of the 3 closed + choice
    assert s["medevalkit_accuracy"] == pytest.approx(100 * 3 / 6, abs=0.01)   # "Answer: the liver" fails there
    assert s["medevalkit_differs"] == 1 and set(s["score_modes"]) == {"closed_only_accuracy", "medevalkit_accuracy", "semantic_accuracy"}
