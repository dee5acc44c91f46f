"""The semantic open-answer check (A.4) and one meaning of "correct" for synthesis, reward and evaluation."""

from __future__ import annotations

import pytest

from medsage.answers import SemanticRule, semantic_match
from medsage.data_pipeline.synthesis.leaks import check_answer
from medsage.eval.scoring import score_item
from medsage.plugins.rewards import RewardInput, build_reward
from medsage.records import Sample
from medsage.scaffold import render


@pytest.mark.parametrize("said, reference, ok", [
    ("Findings are most consistent with choroidal neovascularization (CNV).", "choroidal neovascularization", True),
    ("Computed tomography", "CT", True),                        # synonym
    ("X-ray", "radiograph", True),
    ("The kidneys", "renal", True),                             # plural folded, adjective synonym
    ("left lower lobe", "lower lobe of the left lung", True),   # recall 3/4
    ("about 5.1 cm", "5 cm", True),                             # number within 5 %
    ("3 cm", "5 cm", False),                                    # number outside the tolerance
    ("No pneumothorax is seen", "pneumothorax", False),         # negation flips the finding
    ("no fracture", "no fracture", True),
    ("fracture", "no fracture", False),
    ("right lung", "left lung", False),
    ("pneumonia or tuberculosis", "pneumonia", False),          # hedging between candidates
    ("kidney", "right kidney", False),                          # recall 1/2
    ("", "liver", False),
])
def test_semantic_match(said, reference, ok):
    assert semantic_match(said, reference).correct is ok


def test_rule_is_configurable():
    assert semantic_match("kidney", "right kidney", SemanticRule(threshold=0.5)).correct
    assert not semantic_match("Findings are consistent with a liver lesion", "liver", SemanticRule(metric="f1")).correct
    assert semantic_match("hcc", "hepatocellular carcinoma",
                          SemanticRule(extra_synonyms=(("hcc", "hepatocellular carcinoma"),))).correct
    with pytest.raises(ValueError, match="threshold"):
        SemanticRule(threshold=0)
    exact = build_reward("accuracy", {"open_match": "exact"})
    semantic = build_reward("accuracy")
    it = RewardInput(render("liver", "v", "k", "c", "Findings are consistent with a liver lesion"), "liver", "open")
    assert exact(it)["overall"] == 0.0 and semantic(it)["overall"] == 1.0


CASES = [  # (question type, reference, options, what the trajectory answers)
    ("open", "liver", None, "Findings are consistent with a liver lesion"),
    ("open", "liver", None, "Liver"),
    ("open", "liver", None, "No liver abnormality"),
    ("open", "right kidney", None, "kidney"),
    ("open", "ct", None, "computed tomography"),
    ("open", "pneumothorax", None, "Findings are consistent with pneumothorax or effusion"),
    ("closed", "yes", None, "Yes, a lesion is present."),
    ("closed", "yes", None, "No."),
    ("closed", "left", None, "The left side"),                 # a closed item whose reference is not yes/no
    ("choice", "C", {"A": "Cataracts", "C": "Choroidal Neovascularization (CNV)"},
     "Findings are most consistent with choroidal neovascularization (CNV)."),
    ("choice", "C", {"A": "Cataracts", "C": "Choroidal Neovascularization (CNV)"}, "A. Cataracts"),
]


def test_synthesis_reward_and_evaluation_agree_on_correct(tmp_path):
    accuracy = build_reward("accuracy")
    agreed = []
    for i, (qtype, reference, options, said) in enumerate(CASES):
        sample = Sample(id=f"s{i}", source="t", images=[], question="q", answer=reference, question_type=qtype,
                        options=options)
        kept = check_answer(said, sample) == []
        response = render("the liver", "v", "k", "c", said)
        rewarded = accuracy(RewardInput(response, reference, qtype, options))["overall"] == 1.0
        evaluated = score_item({"benchmark": "b", "id": str(i), "prediction": response, "answer": reference,
                                "answer_type": qtype, "options": options})["semantic"]
        assert kept is rewarded is evaluated, (said, reference, kept, rewarded, evaluated)
        agreed.append(kept)
    assert agreed == [True, True, False, False, True, False, True, False, True, True, False]


def test_optional_llm_judge_through_the_chat_client():
    """open_match=llm asks the judge only when the rule says no. The server is the scripted loopback one
    (tests/helpers): a real model cannot be made to answer yes for one pair and no for another."""
    import synth_server as H

    def script(body, headers):
        text = body["messages"][0]["content"]
        return 200, H.completion("Yes." if "Candidate answer: hepatic mass" in text else "No"), 0.0

    with H.LoopbackServer(script) as server:
        reward = build_reward("accuracy", {"open_match": "llm", "judge": {"base_url": server.base_url,
                                                                          "model": "judge"}})

        def score(said, reference="liver lesion"):
            return reward(RewardInput(render("the liver", "v", "k", "c", said), reference, "open",
                                      question="What is abnormal?"))["overall"]

        assert score("liver lesion") == 1.0 and len(server.requests) == 0  # the rule decided, no call
        assert score("hepatic mass") == 1.0 and score("renal cyst") == 0.0
        assert len(server.requests) == 2
    with pytest.raises(ValueError, match="needs judge"):
        build_reward("accuracy", {"open_match": "llm"})
