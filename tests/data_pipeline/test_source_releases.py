"""Source adapters on exports shaped as their publishers ship them."""

from __future__ import annotations

import json

import pytest

from medsage.data_pipeline.questions import QuestionConfig, ask
from medsage.data_pipeline.sources.roboflow_yolo import parse_label_line
from medsage.registry import SOURCES
from source_ingest import ingest_all


def test_yolo_polygon_lines_become_the_box_of_their_extremes(make_source, tmp_path):
    root = make_source("roboflow_yolo", tmp_path / "seg", polygons=True)
    adapter, kept, rejected = ingest_all("roboflow_yolo", root, tmp_path)
    assert sorted(r.reason for r in rejected) == ["bad-annotation", "no-annotation"]  # the polygons are kept
    poly = next(s for s in kept if s.id.endswith("xray_train_1.png"))
    assert poly.metadata["polygons_as_boxes"] == 1
    assert poly.rois[0].box == pytest.approx((25.0, 31.0, 55.0, 51.0), abs=1e-3)  # same box as the box export


def test_parse_label_line_rules():
    assert parse_label_line("0 0.5 0.5 0.2 0.4".split(), 1) == (0, (0.5, 0.5, 0.2, 0.4), "box")
    cls, box, shape = parse_label_line("1 0.1 0.2 0.5 0.2 0.3 1.2".split(), 2)  # clipped to the image
    assert (cls, shape) == (1, "polygon") and box == pytest.approx((0.3, 0.6, 0.4, 0.8))
    for bad in ("0 0.1 0.2 0.3", "0 0.1 0.2 0.3 0.4 0.5", "0 0.1 0.2 0.3 0.4 0.5 0.6 0.7", "2 0.5 0.5 0.1 0.1"):
        with pytest.raises(ValueError):
            parse_label_line(bad.split(), 2)


def test_yolo_placeholder_class_is_never_asked_nor_a_distractor(make_source, tmp_path):
    root = make_source("roboflow_yolo", tmp_path / "ph", placeholder=True)
    adapter, kept, _ = ingest_all("roboflow_yolo", root, tmp_path)
    assert adapter.classes == ["xray-dataset", "fracture", "implant"]
    assert adapter.labels == ["fracture", "implant"] and adapter.dropped_classes == ["xray-dataset"]
    assert all("xray-dataset" not in s.question and "xray-dataset" not in (s.options or {}).values() for s in kept)
    # choice questions draw their distractors from the export's remaining classes
    item = adapter.load(adapter.inputs()[0])
    for index in range(6):
        sample = ask(adapter, item, index, QuestionConfig())
        assert set((sample.options or {}).values()) <= set(adapter.labels)


def test_yolo_never_reads_a_stray_folder_beside_the_export(make_source, tmp_path):
    root = make_source("roboflow_yolo", tmp_path / "exports" / "xray")
    stray = tmp_path / "exports" / "train" / "images"  # what "../train/images" names from the export's parent
    stray.mkdir(parents=True)
    (stray / "stray.png").write_bytes((root / "train" / "images" / "xray_train_0.png").read_bytes())
    adapter = SOURCES.get("roboflow_yolo")(root, tmp_path / "img")
    assert all(image.is_relative_to(root) for image, _ in adapter.files.values())
    assert not any("stray" in k for k in adapter.inputs())
    # a split folder that only exists outside the export is an error, not a silent read
    (root / "train").rename(root / "moved")
    with pytest.raises(ValueError, match="outside the source root"):
        SOURCES.get("roboflow_yolo")(root, tmp_path / "img")


def test_coco_category_without_annotations_is_dropped(make_source, tmp_path):
    root = make_source("roboflow_coco", tmp_path / "coco")
    for split in ("train", "valid"):
        path = root / split / "_annotations.coco.json"
        coco = json.loads(path.read_text())
        coco["categories"].append({"id": 9, "name": "polygon-only", "supercategory": "brain-tumors"})
        path.write_text(json.dumps(coco))
    adapter = SOURCES.get("roboflow_coco")(root, tmp_path / "img")
    assert adapter.labels == ["glioma", "meningioma", "pituitary"]
    assert adapter.dropped_classes == ["brain-tumors", "polygon-only"]


def test_pubmedvision_reads_both_published_files(make_source, tmp_path):
    root = make_source("pubmedvision", tmp_path / "PMV", n=3, instruction=True)
    adapter, kept, rejected = ingest_all("pubmedvision", root, tmp_path)
    assert len(adapter.inputs()) == 6 and len(set(adapter.inputs())) == 6  # same ids in both files, keys differ
    assert {s.metadata["file"] for s in kept} == {"PubMedVision_Alignment_VQA.json",
                                                   "PubMedVision_InstructionTuning_VQA.json"}
    assert [r.reason for r in rejected] == ["unreadable-image", "unreadable-image"]
    one = SOURCES.get("pubmedvision")(root, tmp_path / "i", json_name="PubMedVision_InstructionTuning_VQA.json")
    assert len(one.inputs()) == 3 and one.load(one.inputs()[0]).question.startswith("Which body part")


def test_deeplesion_full_header_and_train_val_test(make_source, tmp_path):
    import csv

    from medsage.launch.demo.sources import DL_COLUMNS

    root = make_source("deeplesion", tmp_path / "DL", n=9)
    with (root / "DL_info.csv").open() as fh:
        assert next(csv.reader(fh)) == DL_COLUMNS and len(DL_COLUMNS) == 18
    adapter = SOURCES.get("deeplesion")(root, tmp_path / "img")
    assert adapter.rows_in_file == 9 and adapter.split_counts == {"test": 3, "train": 3, "val": 3}
    train = SOURCES.get("deeplesion")(root, tmp_path / "img", splits=["train"])
    assert len(train.inputs()) == 3
    assert {train.load(k).metadata["split"] for k in train.inputs()} == {"train"}
    with pytest.raises(ValueError, match="not among"):
        SOURCES.get("deeplesion")(root, tmp_path / "img", splits=["validation"])
