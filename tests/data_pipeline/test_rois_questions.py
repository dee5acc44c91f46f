"""RoI normalisation (Eq. 1) and the questions asked from labels."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from medsage.data_pipeline.sources.base import SourceItem, seeded_rng
from medsage.data_pipeline.questions import QuestionConfig, ask
from medsage.data_pipeline.rois import RoIConfig, normalise_rois, roi_region
from medsage.records import RoI
from medsage.scaffold import parse_regions


def test_roi_set_has_annotation_variants_text_and_global():
    box = RoI("box", box=(40, 50, 80, 70), label="liver")
    text = RoI("text", text="right lower lobe", origin="text-cue")
    cfg = RoIConfig(perturb=3, expand=2, subregion=2)
    rois = normalise_rois([box, text], 100, 90, cfg, random.Random(0))
    origins = Counter(r.origin for r in rois)
    assert origins == {"annotation": 1, "perturb": 3, "expand": 2, "subregion": 2, "text-cue": 1, "global": 1}
    assert rois[-1].kind == "global" and rois[-1].box == (0.0, 0.0, 100.0, 90.0)
    assert text in rois  # text RoIs unchanged
    for r in rois:
        if r.kind == "box":
            x1, y1, x2, y2 = r.box
            assert 0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 90
    subs = [r.box for r in rois if r.origin == "subregion"]
    assert all(40 <= s[0] and s[2] <= 80 and 50 <= s[1] and s[3] <= 70 for s in subs)
    expanded = [r.box for r in rois if r.origin == "expand"]
    assert any(e[2] - e[0] > 40 for e in expanded)
    perturbed = [r.box for r in rois if r.origin == "perturb"]
    assert len(set(perturbed)) == 3 and box.box not in perturbed


def test_roi_variants_clip_to_the_image_and_are_seeded():
    edge = RoI("box", box=(0, 0, 30, 30), label="x")
    a = normalise_rois([edge], 32, 32, RoIConfig(expand_scale=3.0), seeded_rng(0, "k"))
    b = normalise_rois([edge], 32, 32, RoIConfig(expand_scale=3.0), seeded_rng(0, "k"))
    assert a == b
    expanded = next(r for r in a if r.origin == "expand")
    assert expanded.box == (0.0, 0.0, 32.0, 32.0)
    assert normalise_rois([edge], 32, 32, RoIConfig(), seeded_rng(1, "k")) != a


def test_roi_to_box_2d_round_trips_through_the_scaffold():
    region = roi_region(RoI("box", box=(50, 20, 150, 60), label="lesion"), 200, 100)
    assert region.coords == (200, 250, 600, 750)  # [y1, x1, y2, x2] on 0-1000
    parsed, issues = parse_regions(region.to_json())
    assert not issues and parsed[0] == region


def test_bad_roi_config_is_rejected():
    with pytest.raises(ValueError, match="jitter"):
        RoIConfig(jitter=0.7)


class _Source:
    name = "toy"
    labels = ["liver", "lung", "kidney", "bone", "pelvis"]
    modality = "CT"


def test_question_types_and_answer_positions_are_balanced():
    cfg = QuestionConfig()
    samples = [ask(_Source(), SourceItem(key=f"k{i}", images=["/x.png"], labels=["liver"]), i, cfg)
               for i in range(48)]
    assert Counter(s.question_type for s in samples) == {"closed": 16, "choice": 16, "open": 16}
    closed = [s for s in samples if s.question_type == "closed"]
    assert Counter(s.answer for s in closed) == {"yes": 8, "no": 8}
    for s in closed:
        assert ("liver" in s.question) == (s.answer == "yes")
    choice = [s for s in samples if s.question_type == "choice"]
    assert Counter(s.answer for s in choice) == {"A": 4, "B": 4, "C": 4, "D": 4}
    for s in choice:
        assert s.options[s.answer] == "liver"
        assert len(set(s.options.values())) == 4 and set(s.options.values()) <= set(_Source.labels)
    assert all(s.answer == "liver" for s in samples if s.question_type == "open")


def test_distractors_never_name_a_label_present_in_the_image():
    item = SourceItem(key="multi", images=["/x.png"], labels=["liver", "kidney"])
    for i in range(30):
        s = ask(_Source(), SourceItem(**{**vars(item), "key": f"m{i}"}), i, QuestionConfig())
        if s.question_type == "choice":
            wrong = [v for k, v in s.options.items() if k != s.answer]
            assert not {"liver", "kidney"} & set(wrong)
        if s.question_type == "closed" and s.answer == "no":
            assert "liver" not in s.question and "kidney" not in s.question


def test_recipe_wording_overrides_the_source_wording():
    item = SourceItem(key="k", images=["/x.png"], labels=["liver"])
    source = _Source()
    source.templates = {"closed": "Source asks about {label}?"}
    assert ask(source, item, 0, QuestionConfig(types=["closed"])).question == "Source asks about liver?"
    custom = QuestionConfig(types=["closed"], closed="Is the {label} abnormal?")
    assert ask(source, item, 0, custom).question == "Is the liver abnormal?"
