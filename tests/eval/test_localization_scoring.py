"""The miniature's metrics on hand-written predictions: per-kind accuracy, <LOC> IoU, strict-format rate."""

from __future__ import annotations

import json

import pytest

from medsage.eval.localization import iou
from medsage.eval.scoring import PredictionError, item_fields, score_predictions
from medsage.records import RoI, Sample
from medsage.scaffold import render, render_check

TRUTH = [[100, 100, 300, 300], [600, 600, 800, 900]]  # [y1, x1, y2, x2] on the 0-1000 grid


def _out(answer: str, box=None, loc_words: str = "the lesion") -> str:
    loc = json.dumps({"box_2d": box, "label": "lesion"}) if box else loc_words
    return render(loc, "a bright disc", "hyperdense means brighter than tissue", "so it is", answer)


def _line(prediction, answer, kind, truth=TRUTH, answer_type="closed", options=None, id_="x"):
    return {"benchmark": "lesions", "id": id_, "question": "q", "answer": answer, "answer_type": answer_type,
            "options": options, "question_kind": kind, "truth_boxes": truth, "prediction": prediction}


def test_iou_by_hand():
    assert iou([0, 0, 100, 100], [0, 0, 100, 100]) == 1.0
    assert iou([0, 0, 100, 100], [0, 50, 100, 150]) == pytest.approx(50 / 150)
    assert iou([0, 0, 100, 100], [200, 200, 300, 300]) == 0.0
    assert iou([0, 0, 0, 100], [0, 0, 0, 100]) == 0.0  # empty boxes


def test_kinds_iou_and_strict_format_from_hand_written_predictions(tmp_path):
    quad = {"A": "upper left", "B": "upper right", "C": "lower left", "D": "lower right"}
    lines = [
        # presence right, box = the first truth box exactly: IoU 1
        _line(_out("yes", [100, 100, 300, 300]), "yes", "presence", id_="p1"),
        # presence wrong; its box matches the second truth box half-way (best match is taken)
        _line(_out("no", [600, 600, 800, 750]), "yes", "presence", id_="p2"),
        # quadrant right but no box in <LOC> (words only): IoU 0
        _line(_out("A"), "A", "quadrant", answer_type="choice", options=quad, id_="q1"),
        # a negative image: no truth box, so it takes no part in loc_iou
        _line(_out("no", [0, 0, 1000, 1000]), "no", "presence", truth=[], id_="p3"),
        # not strict: free text before <LOC>; answer right, box unparseable JSON: IoU 0
        _line("Let me look. " + _out("B", loc_words='{"box_2d": [1, 2, 3]}'), "B", "count", answer_type="choice",
              options={"A": "0", "B": "1", "C": "2", "D": "3"}, id_="c1"),
        # a self-check retry is strict; its revised trajectory's box is the one scored
        _line(_out("no", [700, 700, 900, 900]) + render_check("the disc is there") + _out("yes", [600, 600, 800, 900]),
              "yes", "presence", id_="p4"),
    ]
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    verdicts_path, _, summary = score_predictions(path)
    s = summary["lesions"]
    assert s["by_kind"] == {"count": {"n": 1, "correct": 1, "accuracy": 100.0},
                            "presence": {"n": 4, "correct": 3, "accuracy": 75.0},
                            "quadrant": {"n": 1, "correct": 1, "accuracy": 100.0}}
    assert s["loc_iou_n"] == 5
    assert s["loc_iou"] == pytest.approx(round((1.0 + 0.5 + 0.0 + 0.0 + 1.0) / 5, 4))
    assert s["strict_format"] == pytest.approx(round(100 * 5 / 6, 2))
    verdicts = {v["id"]: v for v in map(json.loads, verdicts_path.read_text().splitlines())}
    assert verdicts["p3"]["loc_iou"] is None and verdicts["c1"]["strict_format"] is False
    assert verdicts["p2"]["loc_iou"] == 0.5


def test_item_fields_carry_kind_and_grid_boxes_so_a_file_scores_alone():
    sample = Sample(id="s", source="roboflow_coco", images=["/x.png"], question="q", answer="yes",
                    question_type="closed",
                    rois=[RoI("box", box=(11.2, 22.4, 33.6, 44.8), label="hypodense lesion"),
                          RoI("box", box=(10, 20, 40, 50), origin="perturb"),
                          RoI("global", box=(0, 0, 112, 112), origin="global")],
                    metadata={"image_size": [112, 112], "question_kind": "presence"})
    fields = item_fields(sample, "records", None)
    assert fields["question_kind"] == "presence"
    assert fields["truth_boxes"] == [[200, 100, 400, 300]]  # the annotation only, [y1, x1, y2, x2]


def test_bad_truth_boxes_name_the_line(tmp_path):
    path = tmp_path / "preds.jsonl"
    path.write_text(json.dumps(_line(_out("yes"), "yes", "presence", truth=[[1, 2, 3]])) + "\n")
    with pytest.raises(PredictionError, match=r"line 1: 'truth_boxes' must be"):
        score_predictions(path)
