"""The miniature's vision warm-up (launch/demo/vision_warmup.py): it trains the tower on a data run's boxes, writes
only the tower's weights back, and its probe reads the quadrant and label targets it was given."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsage.launch.demo.lesions import make_lesion_task
from medsage.launch.demo.vision_warmup import SUMMARY, WarmupConfig, box_targets, warm_up_vision
from medsage.records import RoI, Sample, write_records


def _records(tmp_path, n: int, seed: int, name: str):
    """Records of a generated lesion split, one per slice, with its boxes as the data pipeline writes them."""
    make_lesion_task(tmp_path / name, n, seed=seed)
    coco = json.loads((tmp_path / name / "train" / "_annotations.coco.json").read_text())
    labels = {c["id"]: c["name"] for c in coco["categories"]}
    samples = []
    for image in coco["images"]:
        rois = [RoI(kind="box", box=(a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                     a["bbox"][1] + a["bbox"][3]), label=labels[a["category_id"]])
                for a in coco["annotations"] if a["image_id"] == image["id"]]
        samples.append(Sample(id=str(image["id"]), source="lesions", question="q", answer="a", question_type="closed",
                              images=[str(tmp_path / name / "train" / image["file_name"])], rois=rois,
                              metadata={"image_size": [image["width"], image["height"]]}))
    return write_records(tmp_path / f"{name}.jsonl", samples)


def test_targets_mark_each_boxed_quadrant_and_mask_the_label_without_a_box(tmp_path):
    blank = Sample(id="0", source="s", question="q", answer="a", question_type="closed", images=["x.png"],
                   metadata={"image_size": [100, 100]})
    two = Sample(id="1", source="s", question="q", answer="a", question_type="closed", images=["y.png"],
                 rois=[RoI(kind="box", box=(60, 10, 80, 30), label="hypo"), RoI(kind="box", box=(5, 60, 25, 90),
                                                                                 label="hypo"),
                       RoI(kind="global", box=(0, 0, 100, 100), label="full image")],
                 metadata={"image_size": [100, 100]})
    paths, targets, masks, labels = box_targets(write_records(tmp_path / "r.jsonl", [blank, two]), ["hyper", "hypo"])
    assert paths == ["x.png", "y.png"] and labels == ["hyper", "hypo"]
    # any box, two or more, the four quadrants (upper right and lower left here), then the labels (hypo)
    assert targets.tolist() == [[0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 1, 1, 0, 0, 1]]
    assert masks.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8]  # no box: which label is moot


def test_a_record_without_an_image_is_refused_by_name(tmp_path):
    text_only = Sample(id="note-7", source="s", question="q", answer="a", question_type="closed", images=[])
    with pytest.raises(ValueError, match=r"r\.jsonl: record 'note-7' has no image"):
        box_targets(write_records(tmp_path / "r.jsonl", [text_only]))


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    from safetensors.torch import load_file

    from medsage.launch.demo.tiny_model import build_tiny_model

    tmp = tmp_path_factory.mktemp("warmup")
    model = build_tiny_model(tmp / "model", hidden_size=64, text_layers=1, vision_layers=2, vision_hidden_size=64,
                             grey_windows=True)
    before = load_file(model / "model.safetensors")
    summary = warm_up_vision(model, _records(tmp, 32, 0, "train"), _records(tmp, 16, 7, "eval"),
                             WarmupConfig(steps=200, batch_size=8))
    return model, before, load_file(model / "model.safetensors"), summary


def test_only_the_vision_tower_changes_and_the_checkpoint_still_loads(warmed):
    from transformers import Qwen2_5_VLForConditionalGeneration

    model, before, after, _ = warmed
    changed = {k for k in before if not np.array_equal(before[k].numpy(), after[k].numpy())}
    assert changed and all(k.startswith("model.visual.") for k in changed)
    assert any(".merger." in k for k in changed) and any(".blocks." in k for k in changed)
    assert not list(model.glob(".vision_warmup*"))  # the temporary folder is gone
    Qwen2_5_VLForConditionalGeneration.from_pretrained(model)


def test_the_probe_learns_the_training_targets_and_scores_the_held_out_ones(warmed):
    model, _, _, summary = warmed
    assert json.loads((model / SUMMARY).read_text()) == summary
    assert summary["images"] == 32 and summary["labels"] == ["hyperdense lesion", "hypodense lesion"]
    assert summary["loss_last"] < 0.7 * summary["loss_first"]
    train, held_out = summary["train_probe_accuracy"]["pooled"], summary["eval_probe_accuracy"]["pooled"]
    assert set(train) == set(held_out) == {"any box", "two or more boxes", "quadrant upper left",
                                           "quadrant upper right", "quadrant lower left", "quadrant lower right",
                                           "label hyperdense lesion", "label hypodense lesion"}
    assert set(summary["eval_probe_accuracy"]["every_token"]) == set(held_out)
    assert min(train["label hyperdense lesion"], train["label hypodense lesion"]) >= 0.9  # density is local


def test_cli_refuses_warm_up_flags_without_records(tmp_path):
    from medsage.launch.demo.tiny_model_cli import main

    with pytest.raises(SystemExit, match="need --warm-up-on"):
        main([str(tmp_path / "m"), "--warm-up-steps", "5"])
