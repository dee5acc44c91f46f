"""Reasoning Path Augmentation counts, dedup and per-image cap, the Low-level Aug baseline, and a whole
offline run with the template synthesizer (no model)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from medsage.answers import match_answer
from medsage.data_pipeline.synthesis.draw import Draw, draw_order
from medsage.data_pipeline.synthesis.rpa import low_level_copies, plan_units
from medsage.data_pipeline.synthesis.run import run_synthesis
from medsage.records import RoI, read_records
from medsage.recipes import compose
from medsage.registry import SYNTHESIZERS
from medsage.scaffold import check_strict, parse_regions

T = ["morphology", "intensity", "anatomy", "differential"]


def _with_rois(samples):
    """Demo samples as Data pipeline I leaves them: box RoI (+2 variants), a text RoI and the global RoI."""
    for s in samples:
        s.trajectory = None
        x1, y1, x2, y2 = s.rois[0].box
        s.rois = [s.rois[0], RoI("box", box=(x1 - 2, y1 - 1, x2 + 1, y2 + 2), label=s.rois[0].label, origin="perturb"),
                  RoI("box", box=(x1 - 6, y1 - 6, x2 + 6, y2 + 6), label=s.rois[0].label, origin="expand"),
                  RoI("text", text="upper abdomen", label="anatomical location", origin="text-cue"),
                  RoI("global", box=(0, 0, 112, 112), label="full image", origin="global")]
        s.metadata["image_size"] = [112, 112]
    return samples


def _cfg(**over):
    cfg = OmegaConf.to_container(compose("synthesis/default", [f"{k}={v}" for k, v in over.items()]))
    return cfg


def test_plan_is_m_rois_by_t_templates(demo_samples):
    s = _with_rois(demo_samples[:1])[0]
    units = plan_units(s, T)
    assert len(units) == 5 * 4 and len({u.uid for u in units}) == 20
    few = plan_units(s, T, max_rois=3, max_templates=2)
    assert len(few) == 6 and {u.roi_index for u in few} == {0, 1, 2}
    assert {u.template for u in few} == set(T)  # templates rotate over RoIs, so all of T is used
    assert plan_units(s, T, max_rois=3, max_templates=2, seed=0) == few  # seeded
    boxes_only = plan_units(s, T, kinds=("box", "global"))
    assert len(boxes_only) == 4 * 4 and all(u.region() is not None for u in boxes_only)
    s.rois = []
    (only,) = plan_units(s, T, max_templates=1)
    assert only.roi.kind == "global"  # no RoI: reason over the whole image


def test_both_synthesizers_are_registered():
    assert {"template", "llm"} <= set(SYNTHESIZERS.names())


def test_template_run_end_to_end(demo_samples, tmp_path):
    samples = _with_rois(demo_samples[:8])
    samples[7].rejection = "too_dark"  # rejected upstream: carried through and counted
    result = run_synthesis(samples, _cfg(**{"rpa.max_per_image": 6}), tmp_path / "out")
    rep = result.report
    # The cap is applied before drafting: only 6 of each record's 20 units are drafted, none thrown away.
    assert rep["units_planned"] == 7 * 5 * 4 and rep["units"] == 7 * 6 and rep["units_not_drafted"] == 7 * 14
    assert rep["trajectories_kept"] + rep["rejected"] == rep["units"] + 1  # every drafted unit accounted for
    assert rep["records_in"] == 8 and rep["records_rejected_upstream"] == 1 and rep["records_with_trajectories"] == 7
    assert rep["trajectories_kept"] == 7 * 6 and "image_cap" not in rep["rejected_by_reason"]
    assert rep["drafts_per_kept_trajectory"] == 1.0 and rep["draw_rounds"] == 1
    assert rep["calls_made"] == 0
    kept = list(read_records(tmp_path / "out" / "kept.jsonl"))
    rejected = list(read_records(tmp_path / "out" / "rejected.jsonl"))
    assert len(kept) == rep["trajectories_kept"] and len(rejected) == rep["rejected"]
    assert all(r.rejection for r in rejected)
    for s in kept:
        text = s.trajectory.render()
        box = s.rois[0].kind in ("box", "global")
        _, issues = check_strict(text, require_region=box)
        assert issues == []
        regions, _ = parse_regions(s.trajectory.loc)
        assert bool(regions) == box  # box and global RoIs carry box_2d; text RoIs have no coordinates to give
        if s.rois[0].kind == "global":
            assert regions[0].coords == (0, 0, 1000, 1000)
        assert match_answer(s.trajectory.answer, s.answer, s.question_type, s.options).correct
    # Round-robin cap: each image keeps a spread of RoIs, not all templates of the first RoI.
    per_image = {}
    for s in kept:
        per_image.setdefault(s.images[0], set()).add(s.metadata["synth"]["roi_index"])
    assert all(len(v) >= 5 for v in per_image.values())
    sft = json.loads((tmp_path / "out" / "sft" / "sage_sft.json").read_text())
    assert len(sft) == len(kept)


def test_draw_order_spreads_over_rois_and_images(demo_samples):
    samples = _with_rois(demo_samples[:3])
    units = [u for s in samples for u in plan_units(s, T)]
    order = draw_order(units, seed=0)
    assert sorted(u.uid for u in order) == sorted(u.uid for u in units) and draw_order(units, seed=0) == order
    # Rank 0 of every RoI of every image comes before any RoI's second template.
    first = order[:3 * 5]
    assert {(u.sample.id, u.roi_index) for u in first} == {(s.id, i) for s in samples for i in range(5)}
    assert draw_order(units, seed=1) != order  # images in a seeded order
    draw = Draw(order, cap=4, target=7)
    batch = draw.next_round()
    assert len(batch) == 7 and max(Counter(tuple(u.sample.images) for u in batch).values()) <= 4
    for u in batch[:5]:  # five kept, two failed: the next round asks for exactly two replacements
        assert draw.accept(u, _traj(u.uid))
    same_image = dataclasses.replace(batch[5], sample=batch[0].sample)
    assert not draw.accept(same_image, _traj(batch[0].uid))  # a duplicate (same image and question) frees its place too
    again = draw.next_round()
    assert len(again) == 2 and not set(map(id, again)) & set(map(id, batch))
    for u in again:
        draw.accept(u, _traj(u.uid))
    assert draw.next_round() == [] and draw.kept == 7
    with pytest.raises(ValueError):
        Draw(order, cap=0, target=None)


def _traj(tag):
    from medsage.scaffold import Trajectory

    return Trajectory(loc=f"at {tag}", vis="v", know="k", con="c", answer="a")


def test_sft_target_is_met_with_few_drafts(demo_samples, tmp_path):
    """A target below the pool: drafting stops there, spread over every image, one draft per kept."""
    samples = _with_rois(demo_samples[:6])
    rep = run_synthesis(samples, _cfg(**{"rpa.target": 10}), tmp_path / "out").report
    assert rep["trajectories_kept"] == 10 == rep["units"] and rep["sft_target"] == 10 and rep["target_shortfall"] == 0
    assert rep["drafts_per_kept_trajectory"] == 1.0
    kept = list(read_records(tmp_path / "out" / "kept.jsonl"))
    assert len({s.images[0] for s in kept}) == 2  # rank 0 (five RoIs) of two images: a spread, not one image
    rep = run_synthesis(samples, _cfg(**{"rpa.target": 1000}), tmp_path / "big").report
    assert rep["trajectories_kept"] == 6 * 8 and rep["target_shortfall"] == 1000 - 48  # the cap bounds it


def test_low_level_aug_baseline(demo_samples, tmp_path):
    import numpy as np
    from PIL import Image

    samples = _with_rois(demo_samples[:3])
    result = run_synthesis(samples, _cfg(**{"rpa.mode": "low_level", "rpa.low_level_copies": 4}), tmp_path / "out")
    assert result.report["units"] == 3  # one trajectory per record
    assert len(result.kept) == 3 * 5  # the original and four perturbed copies each
    by_origin = {}
    for s in result.kept:
        by_origin.setdefault(s.metadata.get("low_level_aug", {}).get("of", s.id), []).append(s)
    for group in by_origin.values():
        assert len({g.trajectory.render() for g in group}) == 1  # one trajectory, many images
        pixels = [np.asarray(Image.open(g.images[0]).convert("L"), dtype=np.int16) for g in group]
        assert all(p.shape == pixels[0].shape for p in pixels)
        assert all(np.abs(p - pixels[0]).mean() > 0.1 for p in pixels[1:])  # really perturbed
    with pytest.raises(ValueError, match="trajectory"):
        low_level_copies(samples[0], 1, tmp_path)  # records without a trajectory cannot be copied


def test_unreadable_image_is_a_rejection_not_a_crash(demo_samples, tmp_path):
    samples = _with_rois(demo_samples[:2])
    samples[1].images = [str(tmp_path / "gone.png")]
    result = run_synthesis(samples, _cfg(), tmp_path / "out")
    bad = [s for s in result.rejected if s.metadata["synth"]["record_id"] == samples[1].id]
    assert len(bad) == 5 * 4 and {s.rejection for s in bad} == {"image_unreadable"}
    assert all(len(s.metadata["synth"]["failed_attempts"]) == 1 for s in bad)  # not retried k times
    assert result.report["records_with_trajectories"] == 1 and result.report["records_without_trajectories"] == 1


def test_same_text_on_two_images_is_no_duplicate(demo_samples):
    """Two negative slices both read "the whole image": each is a trajectory of its own image."""
    a, b = _with_rois(demo_samples[:2])
    units = plan_units(a, T)[:1] + plan_units(b, T)[:1]
    draw = Draw(units, cap=4, target=2)
    assert draw.accept(units[0], _traj("same")) and draw.accept(units[1], _traj("same"))
    assert not draw.accept(units[0], _traj("same"))
