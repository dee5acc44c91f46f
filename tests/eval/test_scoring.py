"""A table of scoring cases (closed, open, choice, multi-image, malformed) and the known failure modes of
substring matching; then scoring files: verdicts with reasons, summaries, references, torn lines."""

from __future__ import annotations

import json

import pytest

from medsage.eval.scoring import PredictionError, read_predictions, score_item, score_predictions, summarize

OPTS = {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}
LVKC = "<LOC>chest</LOC><VISUAL>opacity</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>{}</ANSWER>"

# (prediction, reference, type, options, correct, parsed)
CASES = [
    # closed: words, never substrings
    (LVKC.format("Yes"), "yes", "closed", None, True, True),
    (LVKC.format("**No**"), "no", "closed", None, True, True),
    (LVKC.format("No, there is no fracture."), "no", "closed", None, True, True),
    (LVKC.format("not present"), "no", "closed", None, True, True),          # negated yes-word
    (LVKC.format("not absent"), "yes", "closed", None, True, True),         # negated no-word
    (LVKC.format("Yes, a mass is present"), "no", "closed", None, False, True),
    # answers a substring matcher would take as "no" / "yes": unparseable, hence wrong
    (LVKC.format("normal"), "no", "closed", None, False, False),            # "no" in "normal"
    (LVKC.format("I do not know"), "no", "closed", None, False, False),     # "no" in "not", "know"
    (LVKC.format("nothing abnormal"), "no", "closed", None, False, False),  # "no" in "nothing"
    (LVKC.format("the eyes look symmetric"), "yes", "closed", None, False, False),  # "yes" in "eyes"
    (LVKC.format("yes and no"), "yes", "closed", None, False, False),       # both: never first-wins
    (LVKC.format("no idea"), "no", "closed", None, False, False),           # a non-answer, not "no"
    # closed item whose reference is not yes/no is judged as open text
    (LVKC.format("left"), "left", "closed", None, True, True),
    # choice: letter or option text, one answer only
    (LVKC.format("B"), "B", "choice", OPTS, True, True),
    (LVKC.format("(B)"), "B", "choice", OPTS, True, True),
    (LVKC.format("option B"), "B", "choice", OPTS, True, True),
    (LVKC.format("B. MRI"), "B", "choice", OPTS, True, True),
    (LVKC.format("MRI"), "B", "choice", OPTS, True, True),
    (LVKC.format("X-ray"), "C", "choice", OPTS, True, True),
    (LVKC.format("A or B"), "B", "choice", OPTS, False, True),              # two options: wrong
    (LVKC.format("B. CT"), "B", "choice", OPTS, False, True),               # letter and another option's text
    (LVKC.format("A bright focus"), "A", "choice", OPTS, False, False),     # the article, not option A
    (LVKC.format("CTA"), "A", "choice", OPTS, False, False),                # "CT" in "CTA" is no option
    (LVKC.format("fMRI"), "B", "choice", OPTS, False, False),               # "MRI" in "fMRI" is no option
    # open: normalised exact match is the verdict, recall reported beside
    (LVKC.format("The Left Lung."), "left lung", "open", None, True, True),
    (LVKC.format("lung"), "left lung", "open", None, False, True),
    # extraction fallbacks when the scaffold is missing
    ("Reasoning...\nAnswer: A\nOn reflection...\nFinal answer: **B**", "B", "choice", OPTS, True, True),
    ("yes", "yes", "closed", None, True, True),
    # malformed outputs: counted as unparseable and wrong
    ("", "yes", "closed", None, False, False),
    ("<LOC>chest</LOC><VISUAL>a long description with many words and no answer at all</VISUAL>", "yes", "closed",
     None, False, False),
    (LVKC.format(""), "B", "choice", OPTS, False, False),
    # a self-check retry: the revised answer counts
    (LVKC.format("no") + "<CHECK>the region was wrong</CHECK>" + LVKC.format("yes"), "yes", "closed", None, True, True),
]


@pytest.mark.parametrize("prediction,reference,kind,options,correct,parsed", CASES)
def test_scoring_table(prediction, reference, kind, options, correct, parsed):
    v = score_item({"prediction": prediction, "answer": reference, "answer_type": kind, "options": options, "id": "x"})
    assert (v["correct"], v["parsed"]) == (correct, parsed), v["reason"]
    assert v["reason"]


def test_open_answers_report_exact_and_recall():
    v = score_item({"prediction": LVKC.format("lung"), "answer": "left lung", "answer_type": "open"})
    assert not v["exact"] and v["recall"] == 0.5 and "token recall 0.50" in v["reason"]


def test_multi_image_open_item_accepts_any_listed_answer():
    item = {"prediction": LVKC.format("two"), "answer": "2", "accepted_answers": ["2", "two"], "answer_type": "open"}
    assert score_item(item)["correct"]


def test_fallback_is_named_in_the_reason():
    v = score_item({"prediction": "It shows a mass.\nAnswer: yes", "answer": "yes", "answer_type": "closed"})
    assert v["correct"] and v["extracted_how"] == "answer_line" and "answer line" in v["reason"]


def test_self_check_is_flagged():
    retry = LVKC.format("no") + "<CHECK>c</CHECK>" + LVKC.format("yes")
    assert score_item({"prediction": retry, "answer": "yes", "answer_type": "closed"})["self_check"]


def test_summary_counts_unparsed_and_shows_them():
    items = [{"benchmark": "b", "id": str(i), "prediction": p, "answer": "yes", "answer_type": "closed", "group": g}
             for i, (p, g) in enumerate([(LVKC.format("yes"), "CT"), (LVKC.format("normal"), "CT"),
                                         (LVKC.format("no"), "MRI"), ("", "MRI")])]
    items.append({"benchmark": "b", "id": "o", "prediction": LVKC.format("lung"), "answer": "left lung",
                  "answer_type": "open"})
    s = summarize([score_item(i) for i in items])["b"]
    assert s["n"] == 5 and s["correct"] == 1 and s["accuracy"] == 20.0 and s["unparsed"] == 2
    assert [e["id"] for e in s["unparsed_examples"]] == ["1", "3"]
    assert s["by_type"]["closed"]["unparsed"] == 2 and s["by_type"]["open"]["recall"] == 50.0
    assert s["by_group"] == {"CT": {"n": 2, "accuracy": 50.0}, "MRI": {"n": 2, "accuracy": 0.0}}
    assert "unparseable = wrong" in s["headline"]


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def test_score_file_writes_verdicts_and_summary(tmp_path):
    rows = [{"id": "1", "prediction": LVKC.format("B"), "question": "q", "answer": "B", "answer_type": "choice",
             "options": OPTS},
            {"id": "2", "prediction": "no idea", "question": "q", "answer": "yes", "answer_type": "closed"}]
    verdicts, summary_path, summary = score_predictions(_write(tmp_path / "preds.jsonl", rows))
    lines = [json.loads(x) for x in verdicts.read_text().splitlines()]
    assert [v["correct"] for v in lines] == [True, False] and lines[1]["reason"].startswith("unparseable yes/no")
    assert json.loads(summary_path.read_text())["custom"]["accuracy"] == 50.0 == summary["custom"]["accuracy"]


def test_benchmark_references_resolve_against_loaded_items(tmp_path):
    lookup = {("vqa_rad", "7"): {"benchmark": "vqa_rad", "id": "7", "question": "q", "answer": "no",
                                 "answer_type": "closed", "options": None}}
    path = _write(tmp_path / "p.jsonl", [{"benchmark": "vqa_rad", "id": "7", "prediction": "<ANSWER>No</ANSWER>"}])
    _, _, summary = score_predictions(path, lookup=lookup)
    assert summary["vqa_rad"]["correct"] == 1
    with pytest.raises(PredictionError, match=r"p.jsonl line 1: names vqa_rad item '7'.*--data vqa_rad=PATH"):
        score_predictions(path)


@pytest.mark.parametrize("row,message", [
    ({"id": "1", "question": "q", "answer": "yes", "answer_type": "closed"}, "needs a string field 'prediction'"),
    ({"prediction": "x", "answer": "yes"}, "needs either the item"),
    ({"prediction": "x", "question": "q", "answer": "yes", "answer_type": "binary"}, "answer_type 'binary'"),
    ({"prediction": "x", "question": "q", "answer": "B", "answer_type": "choice"}, "a choice item needs 'options'"),
])
def test_malformed_lines_name_file_and_line(tmp_path, row, message):
    good = {"prediction": "yes", "question": "q", "answer": "yes", "answer_type": "closed"}
    path = _write(tmp_path / "p.jsonl", [good, row])
    with pytest.raises(PredictionError, match="p.jsonl line 2: " + message.replace("(", r"\(")):
        score_predictions(path)


def test_torn_last_line_is_dropped_but_a_bad_middle_line_is_an_error(tmp_path):
    good = {"id": "1", "prediction": "yes", "question": "q", "answer": "yes", "answer_type": "closed"}
    path = _write(tmp_path / "p.jsonl", [good], tail='{"id": "2", "predic')
    assert len(read_predictions(path)) == 1
    read_predictions(path, repair=True)
    assert path.read_text().count("\n") == 1 and path.read_text().endswith("\n")
    _write(path, [good], tail='{"broken\n' + json.dumps(good) + "\n")
    with pytest.raises(PredictionError, match=r"p.jsonl:2: not a JSON object"):
        read_predictions(path)
