"""Each source adapter on a generated source in its real layout, through the registry."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from source_ingest import ingest_all

from medsage.registry import SOURCES


def test_sources_are_registered():
    assert {"deeplesion", "roboflow_coco", "roboflow_yolo", "pubmedvision"} <= set(SOURCES.names())


def test_deeplesion_windows_16bit_slices_and_keeps_boxes(deeplesion_root, tmp_path):
    adapter, kept, rejected = ingest_all("deeplesion", deeplesion_root, tmp_path)
    assert len(adapter.inputs()) == 15
    reasons = sorted(r.reason for r in rejected)
    assert reasons == ["bad-annotation", "box-outside-image", "degenerate-box", "near-constant",
                       "unreadable-image", "unreadable-image"]
    bad = next(r for r in rejected if r.reason == "bad-annotation")
    assert "DL_info.csv line 15" in bad.detail and "Bounding_boxes" in bad.detail
    truncated = next(r for r in rejected if "003.png" in r.detail)
    assert "truncated" in truncated.detail

    first = kept[0]
    assert first.source == "deeplesion" and first.modality == "CT"
    assert first.metadata["split"] == "train" and first.metadata["possibly_noisy"] is False
    assert first.rois[0].label == "bone" and first.rois[0].box == (20.0, 30.0, 38.0, 44.0)
    # The lesion is 200 HU; the row's window is -175..275 HU, so it maps to 255 * 375 / 450.
    pixels = np.asarray(Image.open(first.images[0]))
    assert pixels.dtype == np.uint8
    lesion = pixels[32:42, 22:36]
    assert abs(int(lesion.mean()) - round((200 + 175) / 450 * 255)) <= 1
    assert pixels[0, 0] == 0  # air (-1000 HU) is below the window
    # Unknown lesion type: kept, asked only whether a lesion is there.
    unknown = next(s for s in kept if s.metadata["lesion_type"] == -1)
    assert unknown.question_type == "closed" and unknown.answer == "yes"
    labels = {s.rois[0].label for s in kept if s.metadata["lesion_type"] > 0}
    assert labels <= set(adapter.labels)


def test_deeplesion_default_window_when_row_has_none(make_source, tmp_path):
    import csv

    root = make_source("deeplesion", tmp_path / "DL")
    rows = list(csv.DictReader((root / "DL_info.csv").open()))
    for row in rows:
        row["DICOM_windows"] = ""  # missing: the lesion type picks the window
    with (root / "DL_info.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _, kept, _ = ingest_all("deeplesion", root, tmp_path)
    lung = next(s for s in kept if s.metadata["lesion_type"] == 5)  # lung window -1350..150: 200 HU is white
    liver = next(s for s in kept if s.metadata["lesion_type"] == 4)  # soft-tissue window -175..275
    (x1, y1, x2, y2) = (int(v) for v in lung.rois[0].box)
    assert np.asarray(Image.open(lung.images[0]))[y1 + 3:y2 - 3, x1 + 3:x2 - 3].min() == 255
    (x1, y1, x2, y2) = (int(v) for v in liver.rois[0].box)
    assert abs(int(np.asarray(Image.open(liver.images[0]))[y1 + 3:y2 - 3, x1 + 3:x2 - 3].mean()) - 213) <= 1


def test_roboflow_coco_drops_placeholder_category_and_converts_xywh(coco_root, tmp_path):
    adapter, kept, rejected = ingest_all("roboflow_coco", coco_root, tmp_path)
    assert adapter.labels == ["glioma", "meningioma", "pituitary"]  # "brain-tumors" placeholder left out
    assert [r.reason for r in rejected] == ["no-annotation"]
    sample = next(s for s in kept if s.id.endswith("scan_train_1_jpg.rf.0001.jpg"))
    assert sample.rois[0].box == (19.0, 25.0, 39.0, 41.0) and sample.rois[0].label == "meningioma"
    assert sample.metadata["split"] == "train"


def test_roboflow_yolo_reads_data_yaml_and_normalised_boxes(yolo_root, tmp_path):
    adapter, kept, rejected = ingest_all("roboflow_yolo", yolo_root, tmp_path)
    assert adapter.labels == ["fracture", "implant"]
    assert sorted(r.reason for r in rejected) == ["bad-annotation", "no-annotation"]
    assert "xray_valid_0.txt:1" in next(r.detail for r in rejected if r.reason == "bad-annotation")
    sample = next(s for s in kept if s.id.endswith("xray_train_1.png"))
    assert sample.rois[0].box == pytest.approx((25.0, 31.0, 55.0, 51.0), abs=1e-3)
    assert sample.rois[0].label == "implant"


def test_pubmedvision_keeps_question_and_extracts_text_cues(pubmedvision_root, tmp_path):
    adapter, kept, rejected = ingest_all("pubmedvision", pubmedvision_root, tmp_path)
    assert [r.reason for r in rejected] == ["unreadable-image"]
    first = kept[0]
    # The source's question and caption stay as context; the record asks a short question (test_short_qa.py).
    assert first.metadata["context"]["question"] == "What does the chest CT show?"
    assert first.metadata["context"]["caption"].startswith("A mass in the right lower lobe")
    texts = [r.text for r in first.rois if r.kind == "text"]
    assert texts == ["right lower lobe", "white arrow"]
    second_texts = [r.text for r in kept[1].rois if r.kind == "text"]
    assert second_texts == ["upper pole of the left kidney", "arrowheads"]
    assert not [r for r in kept[2].rois if r.kind == "text"]  # "No focal abnormality": no cue
    assert all(s.rois[-1].kind == "global" for s in kept)


def test_missing_column_is_a_clear_error(tmp_path):
    (tmp_path / "DL_info.csv").write_text("File_name,Bounding_boxes\nx.png,1\n")
    with pytest.raises(ValueError, match=r"DL_info.csv: missing column"):
        SOURCES.get("deeplesion")(tmp_path, tmp_path / "images")


def test_a_stray_degenerate_box_is_dropped_alone_with_its_reason(yolo_root, tmp_path):
    # A real Roboflow export held one sub-2-px box beside good ones: the image and its good boxes stay.
    label = yolo_root / "train" / "labels" / "xray_train_1.txt"
    good = label.read_text()
    label.write_text(good + "0 0.300000 0.300000 0.010000 0.010000\n")  # 1 x 1 px on the 100 px image
    _, kept, rejected = ingest_all("roboflow_yolo", yolo_root, tmp_path)
    assert sorted(r.reason for r in rejected) == ["bad-annotation", "no-annotation"]
    sample = next(s for s in kept if s.id.endswith("xray_train_1.png"))
    assert [r.label for r in sample.rois if r.origin == "annotation"] == ["implant"]
    assert sample.rois[0].box == pytest.approx((25.0, 31.0, 55.0, 51.0), abs=1e-3)
    (dropped,) = sample.metadata["dropped_rois"]
    assert dropped["reason"] == "degenerate-box" and dropped["label"] == "fracture"
    assert dropped["box"] == pytest.approx([29.5, 29.5, 30.5, 30.5], abs=1e-3)
    # Only degenerate boxes: nothing usable is left, so the image is rejected with the reason.
    label.write_text("0 0.300000 0.300000 0.010000 0.010000\n")
    _, kept, rejected = ingest_all("roboflow_yolo", yolo_root, tmp_path / "again")
    assert "degenerate-box" in {r.reason for r in rejected}
    assert not any(s.id.endswith("xray_train_1.png") for s in kept)
