"""`medsage report`'s miniature tables from hand-made runs scored the way `medsage eval run` scores them: Table 5's
rows and the α sweep of the synthetic lesion task, titled as such, kept out of the paper tables, with per-kind
accuracy, <LOC> IoU, strict format, the RL training's self-check/correction rates and the blind yes/no column."""

from __future__ import annotations

import csv
import io
import json

from medsage.eval.report.tables import write_report
from medsage.eval.scoring import score_item, summarize

from medsage.io import atomic_write_json

BOX = [100, 100, 400, 400]  # the truth box on the 0-1000 grid
HALF = [100, 100, 400, 250]  # half of it: IoU 0.5


def _pred(answer: str, box=BOX, strict: bool = True) -> str:
    text = (f'<LOC>The lesion. {{"box_2d": {box}, "label": "lesion"}}</LOC><VISUAL>v</VISUAL>'
            f"<KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>{answer}</ANSWER>")
    return text if strict else "Let me think. " + text


QUADRANTS = {"A": "upper left", "B": "upper right", "C": "lower left", "D": "lower right"}


def _items(presence_right: int, quadrant_right: int, blank: bool = False) -> list[dict]:
    """10 presence (yes/no) and 4 quadrant items: that many right; the first quadrant reply is not strict."""
    items = []
    for i in range(10):
        answer = "yes" if i % 2 == 0 else "no"
        said = answer if i < presence_right else ("no" if answer == "yes" else "yes")
        items.append({"benchmark": "lesions", "id": f"p{i}", "answer": answer, "answer_type": "closed",
                      "question_kind": "presence", "truth_boxes": [BOX] if answer == "yes" else [],
                      "prediction": _pred(said.capitalize(), box=HALF if blank else BOX)})
    for i in range(4):
        said = "A" if i < quadrant_right else "B"
        items.append({"benchmark": "lesions", "id": f"q{i}", "answer": "A", "answer_type": "choice",
                      "options": QUADRANTS, "question_kind": "quadrant", "truth_boxes": [BOX],
                      "prediction": _pred(said, strict=i > 0)})
    return items


def _run(folder, label, tags, presence_right, quadrant_right, blind=None, metrics=None, second=None):
    summaries = summarize([score_item(i) for i in _items(presence_right, quadrant_right)])
    if second is not None:  # what eval.retry=answer_key adds (medsage.eval.retry.score_retries)
        summaries["lesions"]["self_correction"] = second
    run = {"label": label, "model": "m", "backend": "hf", "tags": {"task": "miniature", **tags}, "summaries": summaries}
    if blind is not None:
        run["blind_summaries"] = summarize([score_item(i) for i in _items(blind, 1, blank=True)])
    if metrics is not None:
        path = folder / label / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"step": s + 1, "data": {"medsage/self_check_rate": sc,
                                                                   "medsage/correction_rate": cr}}) + "\n"
                                for s, (sc, cr) in enumerate(metrics)))
        run["tags"]["train_metrics"] = str(path)
    atomic_write_json(folder / label / "run.json", run)


def _rows(path):
    return list(csv.reader(io.StringIO(path.read_text())))


def test_miniature_tables_rows_columns_and_title(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "mini-sft-rl", {"table": "table5", "row": "SFT + RL"}, 9, 3, metrics=[(0.0, 0.0), (0.5, 0.2)])
    _run(runs, "mini-sft", {"table": "table5", "row": "SFT"}, 8, 2, blind=5)
    _run(runs, "mini-self", {"table": "table5", "row": "SFT + RL + Self"}, 10, 4, metrics=[(0.4, 0.5), (0.2, 0.5)],
         second={"trigger": "answer_key", "acc_t1": 71.43, "acc_t2": 85.71, "delta_i_to_c": 14.29, "delta_c_to_i": 0.0})
    _run(runs, "mini-a0.2", {"table": "table4", "alpha": 0.2}, 10, 4)
    _run(runs, "mini-a0", {"table": "table4", "alpha": 0.0}, 9, 4)
    written = write_report([runs], tmp_path / "out")

    rows = _rows(written["miniature_table5.csv"])
    assert rows[0] == ["section", "method", "presence yes/no", "quadrant", "overall", "<LOC> IoU", "strict format %",
                       "Acc@t1", "Acc@t2", "Δ(i→c)", "Δ(c→i)",
                       "self-check % (RL training)", "correction % (RL training)", "blind yes/no"]
    assert [r[1] for r in rows[1:]] == ["SFT [mini-sft]", "SFT + RL [mini-sft-rl]", "SFT + RL + Self [mini-self]"]
    sft, rl, self_ = rows[1:]
    # SFT: 8/10 presence, 2/4 quadrant, 10/14 overall; IoU over the 9 items with a box: all exact -> 1;
    # 13 of 14 outputs strict; no RL metrics; blind pass: 5/10 yes/no
    assert sft[2:] == ["80.0", "50.0", "71.43", "1.0", "92.86", "", "", "", "", "", "", "50.0"]
    assert rl[11:13] == ["25.0", "10.0"] and self_[11:13] == ["30.0", "50.0"]  # means over the training steps, in %
    assert rl[13] == "" and self_[4] == "100.0"
    assert self_[7:11] == ["71.43", "85.71", "14.29", "0.0"] and rl[7:11] == ["", "", "", ""]  # no trigger: empty
    alpha = _rows(written["miniature_alpha.csv"])
    assert [r[1] for r in alpha[1:]] == ["α = 0 [mini-a0]", "α = 0.2 [mini-a0.2]"]  # ascending α

    md = written["miniature_table5.md"].read_text()
    assert md.startswith("### Miniature, a synthetic lesion task (not the paper's benchmarks): Table 5 rows")
    assert "| SFT [mini-sft] | 80.0 | 50.0 | 71.4 | 1.000 | 92.9 | — | — | — | — | — | — | 50.0 |" in md
    assert "answer-key trigger" in md
    assert "uniform guess scores presence yes/no 50 %, quadrant 25 %" in md
    report = written["report.md"].read_text()
    assert "synthetic lesion task" in report and "![Miniature](miniature.png)" in report
    assert written["miniature.png"].read_bytes()[:4] == b"\x89PNG"

    # The paper's tables get no rows from the synthetic task: a report of miniature runs only leaves them out.
    assert not {"table1.csv", "table4.csv", "table5.csv"} & set(written)


def test_blind_column_is_yes_no_only_and_no_miniature_run_no_tables(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "mini-sft", {"table": "table5", "row": "SFT"}, 10, 4, blind=6)
    run = json.loads((runs / "mini-sft" / "run.json").read_text())
    assert run["blind_summaries"]["lesions"]["accuracy"] != 60.0  # the column is yes/no items only, not overall
    written = write_report([runs], tmp_path / "out")
    assert _rows(written["miniature_table5.csv"])[1][-1] == "60.0"
    assert "miniature_alpha.csv" not in written  # no α-sweep run, no α table

    empty = tmp_path / "empty"
    empty.mkdir()
    written = write_report([empty], tmp_path / "out2")
    assert not any(k.startswith("miniature") for k in written)
    assert "synthetic lesion task" not in written["report.md"].read_text()
