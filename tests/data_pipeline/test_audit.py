"""``medsage data audit``: a benchmark's train split against its test split, training sets against benchmarks."""

from __future__ import annotations

import json

from PIL import Image

from medsage.data_pipeline.cli import main as data_main
from medsage.launch.demo import benchmarks as demo
from medsage.records import Sample, write_records


def test_audit_finds_train_test_and_training_set_near_duplicates(tmp_path, picture, capsys):
    root = tmp_path / "medvqa"
    slake = demo.make_slake(root, n_en=3, n_zh=0)
    for i in range(3):  # distinct CT-like pictures (the generated ellipses all hash alike)
        Image.fromarray(picture(10 + i, 160)).save(slake / "imgs" / f"xmlab{i}" / "source.jpg")
    rows = json.loads((slake / "test.json").read_text())
    train_rows = []
    for k, source in enumerate([picture(10, 160), picture(50, 160)]):  # a copy of test image 0, and another
        (slake / "imgs" / f"train{k}").mkdir(parents=True)
        Image.fromarray(source).resize((128, 128)).save(slake / "imgs" / f"train{k}" / "source.jpg")
        train_rows.append({**rows[0], "qid": 900 + k, "img_name": f"train{k}/source.jpg"})
    (slake / "train.json").write_text(json.dumps(train_rows))
    # a training set (records file) holding a copy of test image 2
    Image.fromarray(picture(12, 160)).resize((140, 140)).save(tmp_path / "pool.png")
    write_records(tmp_path / "records.jsonl", [Sample(id="t1", source="x", images=[str(tmp_path / "pool.png")],
                                                      question="q?", answer="yes", question_type="closed")])
    out = tmp_path / "audit"
    assert data_main(["audit", "--eval-root", str(root), "--train", str(tmp_path / "records.jsonl"),
                      "--out", str(out), "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmarks"] == ["slake"]
    own = summary["checks"]["slake: train vs test"]
    assert own == {"eval_images": 3, "against_images": 2, "with_near_duplicate": 1, "fraction": 0.3333}
    pool = summary["checks"][f"{tmp_path / 'records.jsonl'} vs slake test"]
    assert pool["with_near_duplicate"] == 1
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    first = next(p for p in pairs if p["check"] == "slake: train vs test")
    assert first["eval_image"].endswith("xmlab0/source.jpg") and first["match_image"].endswith("train0/source.jpg")
    assert first["eval_ids"] == [f"slake-{rows[0]['qid']}"] and first["distance"] <= 10
    assert "1 of 3 evaluation images have a near-duplicate" in capsys.readouterr().out
