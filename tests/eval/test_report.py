"""`medsage report` from runs written the way `medsage eval run` writes them: the paper's numbers as
reference rows, the runs beside them, the deltas, Tables 2-5 and the α plot; Markdown, CSV, PNG."""

from __future__ import annotations

import csv
import io
import json

import yaml

from medsage.eval.report.tables import PAPER_FILE, main, write_report
from medsage.eval.scoring import score_item, summarize
from medsage.io import atomic_write_json

LVKC = "<LOC>l</LOC><VISUAL>v</VISUAL><KNOWLEDGE>k</KNOWLEDGE><CON>c</CON><ANSWER>{}</ANSWER>"


def _train_metrics(path, rates):
    """An RL run's metrics file as verl's file logger writes it: one {"step", "data"} line per step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": i + 1, "data": {"medsage/self_check_rate": r, "actor/lr": 1e-5}}) + "\n"
                            for i, r in enumerate(rates)))
    return str(path)


def _run(folder, label, accuracy: dict[str, int], tags=None, self_check: int = 0):
    """A run whose benchmark b has accuracy[b] correct items out of 10 (closed yes/no items)."""
    items = []
    for bench, correct in accuracy.items():
        for i in range(10):
            pred = LVKC.format("yes" if i < correct else "no")
            if i < self_check:
                pred = LVKC.format("no") + "<CHECK>c</CHECK>" + pred
            items.append({"benchmark": bench, "id": str(i), "prediction": pred, "answer": "yes",
                          "answer_type": "closed"})
    summaries = summarize([score_item(i) for i in items])
    atomic_write_json(folder / label / "run.json", {"label": label, "model": "m", "backend": "hf",
                                                    "tags": tags or {}, "summaries": summaries})
    return folder / label


def test_paper_numbers_are_transcribed_with_their_tables():
    paper = yaml.safe_load(PAPER_FILE.read_text())
    t1 = paper["table1"]
    ours = t1["groups"]["Medical-specific reasoning VLMs"]["MEDSAGE (Ours)"]
    assert ours == [70.4, 79.8, 66.7, 58.3, 65.8, 69.8, 0.0]
    assert sum(len(rows) for rows in t1["groups"].values()) == 18
    assert t1["groups"]["General-purpose Models"]["InternVL3-8B"][4] is None  # "—" in the paper
    # Δ as printed is the printed average minus MEDSAGE's 69.8
    for rows in t1["groups"].values():
        for values in rows.values():
            assert round(values[5] - 69.8, 1) == values[6]
    assert paper["table4"]["rows"]["Base + SC (α = 0.20)"] == [70.7, 79.1, 64.8, 71.5]
    assert paper["table5"]["rows"]["SFT + RL + Self"][:3] == ours[:3]
    assert paper["table2"]["rows"]["SFT+RL"]["VQA-RAD"][0] == 3.830


def test_the_papers_own_inconsistency_is_noted_where_it_shows(tmp_path):
    """Table 4's α = 0.20 row and Table 5's SFT + RL + Self are one setting printed with two sets of numbers,
    the first being MedEyes' of Table 1: both tables say so in the report, and the claim holds on the numbers."""
    paper = yaml.safe_load(PAPER_FILE.read_text())
    alpha_02 = paper["table4"]["rows"]["Base + SC (α = 0.20)"][:3]
    self_row = paper["table5"]["rows"]["SFT + RL + Self"][:3]
    medeyes = paper["table1"]["groups"]["Medical-specific reasoning VLMs"]["MedEyes"][:3]
    assert alpha_02 != self_row and alpha_02 == medeyes
    written = write_report([tmp_path / "none"], tmp_path / "report")
    for table in ("table4", "table5"):
        text = written[f"{table}.md"].read_text()
        assert "disagrees with itself" in text and "MedEyes" in text, table
        assert "/".join(f"{v:g}" for v in alpha_02).replace("/", " / ") in text
    assert written["report.md"].read_text().count("disagrees with itself") == 2


def test_report_renders_tables_deltas_and_alpha_plot(tmp_path):
    runs = tmp_path / "runs"
    five = {"vqa_rad": 7, "slake": 8, "pathvqa": 6, "pmc_vqa": 5, "mmmu_med": 6}
    _run(runs, "mine", five)
    for alpha, acc, rates in [(0.0, 6, [0.0, 0.0]), (0.2, 8, [0.3, 0.1]), (0.25, 7, [0.5, 0.7])]:
        metrics = _train_metrics(tmp_path / "rl" / f"alpha{alpha}" / "metrics.jsonl", rates)
        _run(runs, f"alpha{alpha}", {"vqa_rad": acc, "slake": acc, "pathvqa": acc},
             {"table": "table4", "alpha": alpha, "train_metrics": metrics})
    _run(runs, "sft-only", {"vqa_rad": 6, "slake": 7, "pathvqa": 6}, {"table": "table5", "row": "SFT"})
    _run(runs, "rpa", {"vqa_rad": 6, "slake": 7, "pathvqa": 6}, {"table": "table3", "row": "RPA-sft"})
    atomic_write_json(runs / "mine" / "judge.json", {"vqa_rad": {"n": 3, "average": 3.5, "dimensions": {
        d: {"mean": 3.5, "scored": 3, "unparsed": 0} for d in ("localization", "visual_analysis", "knowledge", "reasoning")}}})
    written = write_report([runs], tmp_path / "out")

    rows = list(csv.reader(io.StringIO(written["table1.csv"].read_text())))
    assert rows[0][7:] == ["Average (printed)", "Average (recomputed)", "Δ (%)"]
    ours = next(r for r in rows if r[1] == "MEDSAGE (Ours)")
    assert ours[7:] == ["69.8", "68.2", "0.0"]  # printed beside recomputed; Δ of paper rows as printed
    assert next(r for r in rows if r[1] == "InternVL3-8B")[7:9] == ["63.9", ""]  # MMMU missing: no recomputed mean
    mine = next(r for r in rows if r[1] == "mine")
    assert mine[2:] == ["70.0", "80.0", "60.0", "50.0", "60.0", "", "64.0", "-4.2"]  # recomputed only; 64.0 - 68.2
    delta = rows[rows.index(mine) + 1]
    assert delta[2:7] == ["-0.4", "0.2", "-6.7", "-8.3", "-5.8"] and delta[8] == "-4.2"
    assert any(r[1] == "Lingshu-7B" and r[0].startswith("Paper") for r in rows)

    t4 = written["table4.md"].read_text()
    assert "| Base + SC (α = 0.20) [alpha0.2] | 80.0 | 80.0 | 80.0 | 80.0 |" in t4
    assert "|   Δ vs paper | 9.3 | 0.9 | 15.2 | 8.5 |" in t4
    assert "| α = 0.25" not in t4 and "Base + SC (α = 0.25) [alpha0.25]" in t4
    assert "| SFT [sft-only] | 60.0 | 70.0 | 60.0 | 63.3 |" in written["table5.md"].read_text()
    assert "RPA-sft [rpa]" in written["table3.md"].read_text()
    assert "| mine / vqa_rad | 3.500 |" in written["table2.md"].read_text()
    md = written["report.md"].read_text()
    assert "Headline: accuracy" in md and "| alpha0.25 | vqa_rad | 10 | 70.0 | 70.0 | 0 |" in md
    from medsage.eval.report.tables import find_runs, training_self_check_rate

    by_label = {r["label"]: r for r in find_runs([runs])}
    # Figure 5's rate is the training mean, not evaluation's (which never retries: 0 here)
    assert [training_self_check_rate(by_label[f"alpha{a}"]) for a in (0.0, 0.2, 0.25)] == [0.0, 20.0, 60.0]
    assert by_label["alpha0.25"]["summaries"]["vqa_rad"]["self_check_rate"] == 0.0
    assert training_self_check_rate(by_label["mine"]) is None
    for png in ("table1.png", "figure5_alpha.png"):
        assert written[png].read_bytes()[:4] == b"\x89PNG" and written[png].stat().st_size > 5000


def test_report_cli_writes_to_out(tmp_path, capsys):
    _run(tmp_path / "runs", "mine", {"vqa_rad": 5})
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "o")]) == 0
    assert "report.md" in capsys.readouterr().out
    assert "mine (partial: 1/5 benchmarks)" in (tmp_path / "o" / "table1.md").read_text()
    assert json.loads((tmp_path / "runs" / "mine" / "run.json").read_text())["label"] == "mine"
