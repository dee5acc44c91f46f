"""The miniature's generated lesion task (launch/demo/lesions.py), read back by the real Roboflow COCO adapter."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medsage.data_pipeline.cli import main as data_main
from medsage.data_pipeline.questions import QUADRANTS, QuestionConfig, ask
from medsage.data_pipeline.sources.base import InputRejected, SourceItem
from medsage.data_pipeline.sources.roboflow_coco import RoboflowCocoSource
from medsage.launch.demo.lesions import ORGANS, TISSUE, make_lesion_task


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = make_lesion_task(tmp_path / "a", 16, seed=5)
    b = make_lesion_task(tmp_path / "b", 16, seed=5)
    make_lesion_task(tmp_path / "c", 16, seed=6)
    assert a == b and _files(tmp_path / "a") == _files(tmp_path / "b")
    assert not set(_files(tmp_path / "a").values()) & set(_files(tmp_path / "c").values())
    assert a["lesion_count"] == {"0": 4, "1": 8, "2": 4}  # the 1:2:1 mix, exactly


def test_adapter_reads_boxes_labels_and_the_pixels_match_them(tmp_path):
    make_lesion_task(tmp_path, 16, seed=1, split="train")
    src = RoboflowCocoSource(tmp_path, tmp_path / "img")
    assert src.labels == ["hyperdense lesion", "hypodense lesion"] and src.dropped_classes == ["lesions"]
    coco = json.loads((tmp_path / "train" / "_annotations.coco.json").read_text())
    per_image = {img["id"]: [a for a in coco["annotations"] if a["image_id"] == img["id"]] for img in coco["images"]}
    seen = 0
    for key in src.inputs():
        n = len(per_image[int(key.split("_")[1])])
        if n == 0:
            try:
                src.load(key)
            except InputRejected as err:
                assert err.reason == "no-annotation"
            continue
        item = src.load(key)
        assert len(item.rois) == n and len(set(item.labels)) == 1  # two lesions share one density
        pixels = np.asarray(Image.open(item.images[0]), dtype=np.float32)
        quadrants = set()
        for roi in item.rois:
            x1, y1, x2, y2 = roi.box
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            quadrants.add(QUADRANTS[int(cx >= 56) + 2 * int(cy >= 56)])
            assert min(abs(cx - 56), abs(cy - 56)) > 56 / 2 - 112 / 16 - 1  # well inside its quadrant
            core = pixels[int(cy) - 3:int(cy) + 4, int(cx) - 3:int(cx) + 4].mean()
            if roi.label == "hyperdense lesion":
                assert core > TISSUE[1] + 10
            else:
                assert 10 < core < TISSUE[0] - 10  # darker than tissue, brighter than air
        assert len(quadrants) == n
        seen += 1
    assert seen == 12


def test_cli_writes_train_and_a_disjoint_eval_with_the_distribution(tmp_path, capsys):
    assert data_main(["lesion-task", str(tmp_path / "task"), "--train", "8", "--eval", "4", "--seed", "2"]) == 0
    summary = json.loads((tmp_path / "task" / "lesion_task.json").read_text())
    assert (tmp_path / "task" / "train" / "train" / "_annotations.coco.json").is_file()
    assert (tmp_path / "task" / "eval" / "test" / "_annotations.coco.json").is_file()
    assert summary["train"]["seed"] == 2 and summary["eval"]["seed"] != 2
    assert summary["train"]["images"] == 8 and summary["eval"]["images"] == 4
    counts = summary["train"]["lesion_count"]
    assert sum(summary["train"]["quadrant"].values()) == counts["1"] + 2 * counts["2"]
    train = set(_files(tmp_path / "task" / "train").values())
    assert not train & set(_files(tmp_path / "task" / "eval").values())


def test_keep_empty_makes_negative_items(tmp_path):
    make_lesion_task(tmp_path, 16, seed=4)
    src = RoboflowCocoSource(tmp_path, tmp_path / "img", keep_empty=True)
    items = [src.load(key) for key in src.inputs()]
    empty = [it for it in items if not it.rois]
    assert len(items) == 16 and len(empty) == 4 and all(it.labels == [] for it in empty)


def test_box_kinds_answer_from_the_boxes(tmp_path):
    make_lesion_task(tmp_path, 40, seed=7)
    src = RoboflowCocoSource(tmp_path, tmp_path / "img", keep_empty=True)
    cfg = QuestionConfig(types=["presence", "quadrant", "choice", "count"],
                         which="Is the lesion in this image hyperdense or hypodense?")
    kinds = Counter()
    for index, key in enumerate(src.inputs()):
        item = src.load(key)
        sample = ask(src, item, index, cfg, (112, 112))
        kind = sample.metadata["question_kind"]
        kinds[kind] += 1
        boxes = [r.box for r in item.rois]
        if kind == "presence":
            assert sample.question == "Is there a lesion in this image?"
            assert sample.answer == ("yes" if boxes else "no") and sample.question_type == "closed"
        elif kind == "quadrant":
            assert len(boxes) == 1 and list(sample.options.values()) == list(QUADRANTS)
            _, _, x2, y2 = boxes[0]
            truth = ("upper" if y2 < 56 else "lower") + " " + ("left" if x2 < 56 else "right")  # boxes sit in one
            assert sample.options[sample.answer] == truth
        elif kind == "count":
            assert sample.question == "How many lesions are visible?"
            assert sample.options == {"A": "0", "B": "1", "C": "2", "D": "3"}
            assert sample.options[sample.answer] == str(len(boxes))
        else:
            assert kind == "choice" and boxes and sample.options[sample.answer] == item.labels[0]
            assert sorted(sample.options.values()) == ["hyperdense lesion", "hypodense lesion"]
        if kind != "presence" and cfg.types[index % 4] != kind:  # it fell through: the asked kind did not apply
            asked = cfg.types[index % 4]
            assert (asked == "quadrant" and len(boxes) != 1) or (asked == "choice" and not boxes)
    assert set(kinds) == {"presence", "quadrant", "choice", "count"}


def test_no_kind_applies_is_a_clear_error():
    item = SourceItem(key="k", images=["/x.png"], labels=[], rois=[])
    src = type("S", (), {"name": "s", "labels": ["a", "b"], "modality": None})()
    with pytest.raises(ValueError, match="none of the kinds"):
        ask(src, item, 0, QuestionConfig(types=["closed", "quadrant"]))
    with pytest.raises(ValueError, match="question types must be"):
        QuestionConfig(types=["presence", "colour"])


def test_miniature_data_run_end_to_end_then_scores_perfect_answers(tmp_path):
    """`medsage data run --config miniature` on eval then train (with one eval slice copied into train), then
    the eval records as a benchmark: a prediction that answers right and boxes the truth scores 100 % everywhere."""
    from medsage.eval.benchmarks.base import load_benchmark
    from medsage.eval.scoring import item_fields, score_predictions
    from medsage.scaffold import render

    task = tmp_path / "task"
    assert data_main(["lesion-task", str(task), "--train", "32", "--eval", "16"]) == 0
    eval_png = sorted((task / "eval" / "test").glob("*.png"))[5]
    leaked = sorted((task / "train" / "train").glob("*.png"))[9]
    leaked.write_bytes(eval_png.read_bytes())
    assert data_main(["run", "--config", "miniature", f"out_dir={tmp_path / 'eval'}",
                      f"sources.0.root={task / 'eval'}"]) == 0
    assert data_main(["run", "--config", "miniature", f"out_dir={tmp_path / 'train'}",
                      f"sources.0.root={task / 'train'}", f"dedup.eval_dirs=[{task / 'eval' / 'test'}]"]) == 0
    summary = json.loads((tmp_path / "train" / "summary.json").read_text())["sources"]["roboflow_coco"]
    assert summary["inputs"] == 32 and summary["kept"] + summary["rejected"] == 32
    rejected = [json.loads(line) for line in (tmp_path / "train" / "rejected.jsonl").read_text().splitlines()]
    assert f"train/{leaked.name}" in [r["key"] for r in rejected if r["reason"] == "dedup-eval-leak"]
    assert len(rejected) <= 4  # the copy, and few chance near-duplicates
    records = [json.loads(line) for line in (tmp_path / "train" / "records.jsonl").read_text().splitlines()]
    for r in records:  # the truth boxes and the whole image, no variants
        assert {roi["origin"] for roi in r["rois"]} <= {"annotation", "global"}
    kinds = Counter(r["metadata"]["question_kind"] for r in records)
    assert set(kinds) == {"presence", "quadrant", "choice", "count"}
    assert json.loads((tmp_path / "train" / "summary.json").read_text())["question_kinds"] == dict(sorted(kinds.items()))
    assert any(r["metadata"]["question_kind"] == "presence" and r["answer"] == "no" for r in records)  # negatives

    samples = load_benchmark("records", tmp_path / "eval")
    lines = []
    for s in samples:
        truth = item_fields(s, "records", None)
        box = truth["truth_boxes"][0] if truth["truth_boxes"] else [0, 0, 1000, 1000]
        loc = json.dumps({"box_2d": box, "label": "lesion"})
        lines.append({**truth, "prediction": render(loc, "seen", "known", "so", s.answer)})
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(line) + "\n" for line in lines))
    scored = score_predictions(preds)[2]["records"]
    assert scored["accuracy"] == 100.0 and scored["strict_format"] == 100.0 and scored["loc_iou"] == 1.0
    assert set(scored["by_kind"]) == {"presence", "quadrant", "choice", "count"}
    assert scored["loc_iou_n"] == sum(bool(item_fields(s, "records", None)["truth_boxes"]) for s in samples)


def test_the_organ_around_a_lesion_names_its_quadrant(tmp_path):
    """Qwen2.5-VL's tower has no absolute positions; the quadrant is readable from the organ a lesion sits in."""
    make_lesion_task(tmp_path, 64, seed=3)
    coco = json.loads((tmp_path / "train" / "_annotations.coco.json").read_text())
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    yy, xx = np.mgrid[0:112, 0:112] + 0.5
    hits = total = 0
    for ann in coco["annotations"]:
        pixels = np.asarray(Image.open(tmp_path / "train" / names[ann["image_id"]]), dtype=np.float32)
        x, y, w, h = ann["bbox"]
        cx, cy, r = x + w / 2, y + h / 2, max(w, h) / 2
        ring = (np.hypot(xx - cx, yy - cy) > r + 3) & (np.hypot(xx - cx, yy - cy) < r + 6)
        quadrant = int(cx >= 56) + 2 * int(cy >= 56)
        hits += int(np.argmin([abs(np.median(pixels[ring]) - g) for g in ORGANS]) == quadrant)
        total += 1
    assert total > 40 and hits / total >= 0.8, (hits, total)
