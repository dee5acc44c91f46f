"""``medsage eval doctor``: per benchmark what was found, the layout, counts against published, problems."""

from __future__ import annotations

import json

from medsage.eval.cli import main
from medsage.eval.doctor import diagnose


def test_doctor_reports_layouts_counts_and_missing_images(layouts, tmp_path, capsys):
    root = tmp_path / "medvqa"
    layouts.make_vqa_rad_mevf(root / "vqa_rad", n_test=2, n_train=2, leak=True)
    layouts.make_pathvqa_pickles(root / "pathvqa", n=3, repeats=1)
    slake = layouts.make_slake(root, n_en=2, n_zh=0)
    (slake / "imgs" / "xmlab1" / "source.jpg").unlink()
    reports = {r.name: r for r in diagnose(root)}
    rad = {s.split: s for s in reports["vqa_rad"].splits}
    assert rad["test"].layout == "mevf" and rad["test"].n == 2 and rad["test"].published == 451
    assert rad["train"].stats == {"rows": 3, "test_items_left_out": 1} and rad["train"].published == 3064
    path = reports["pathvqa"].splits[0]
    assert path.stats == {"rows": 4, "unique": 3, "rule": "rows as published (pickle)"} and path.repeats == 1
    sl = reports["slake"].splits[0]
    assert len(sl.missing_images) == 1 and "test.json row 1" in sl.missing_images[0]
    assert not reports["pmc_vqa"].ok and "not found" in reports["pmc_vqa"].problems[0]
    assert all(not r.ok for r in reports.values())  # small generated copies never match the published counts

    out = tmp_path / "doctor.json"
    assert main(["doctor", str(root), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "vqa_rad: PROBLEM" in text and "layout mevf" in text and "missing images 1" in text
    assert "2 items, the published split has 451" in text
    assert {r["name"] for r in json.loads(out.read_text())} == {"vqa_rad", "slake", "pathvqa", "pmc_vqa", "mmmu_med"}


def test_doctor_exits_zero_when_nothing_is_wrong(tmp_path, capsys):
    from medsage.records import Sample, write_records

    from medsage.launch.demo.benchmarks import write_png

    image = write_png(tmp_path / "img.png")
    write_records(tmp_path / "records.jsonl", [Sample(id="r1", source="x", images=[str(image)], question="q?",
                                                      answer="yes", question_type="closed")])
    assert main(["doctor", str(tmp_path), "--benchmarks", "records"]) == 0
    assert "records: ok" in capsys.readouterr().out


def test_doctor_notes_question_types_that_differ_from_the_release(layouts, tmp_path, monkeypatch):
    import dataclasses

    from medsage.eval.benchmarks.vqa_rad import VQARad
    from medsage.eval.doctor import check_split

    # A parquet copy without answer_type, against a release whose 3 test items are all CLOSED.
    monkeypatch.setattr(VQARad, "info", dataclasses.replace(VQARad.info, published_sizes={"test": 3},
                                                            published_types={"test": {"closed": 3}}))
    root = layouts.make_vqa_rad_parquet(tmp_path / "pq", n=3)
    report = check_split(VQARad, str(root), "test", {}, tmp_path / "c", required=True)
    assert not report.problems and report.types == {"closed": 2, "open": 1}
    assert report.notes == ["question types {'closed': 2, 'open': 1} differ from the release's {'closed': 3} "
                            "(types here by: yes/no reference)"]


def test_list_check_is_the_doctor(tmp_path, capsys):
    assert main(["list", "--check", str(tmp_path)]) == 1
    assert "vqa_rad: PROBLEM" in capsys.readouterr().out
