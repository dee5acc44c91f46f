"""RoI-less records (§3.1): the LLM proposes a box or text RoI, a second model verifies it, provenance says who;
the template path keeps the global RoI. Against the scripted loopback server (a real model cannot be told to
propose a given box or to refuse one on demand)."""

from __future__ import annotations

import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)
from omegaconf import OmegaConf

from medsage.data_pipeline.synthesis.proposal import ORIGIN, parse_proposal
from medsage.data_pipeline.synthesis.prompts import load_prompts
from medsage.data_pipeline.synthesis.rpa import SynthesisError
from medsage.data_pipeline.synthesis.run import run_synthesis
from medsage.records import RoI
from medsage.recipes import compose
from medsage.scaffold import parse_regions

PROMPTS = load_prompts("synthesis/prompts.yaml")


def _roi_less(demo_samples, n=2):
    out = []
    for s in demo_samples[:n]:
        s.trajectory = None
        w, h = s.metadata.get("image_size") or (112, 112)
        s.rois = [RoI("global", box=(0, 0, w, h), label="full image", origin="global")]
        out.append(s)
    return out


def _cfg(synthesizer="llm", base_url="http://127.0.0.1:9/v1", verifier_url=None, **extra):
    over = {"synthesizer": synthesizer, "rpa.max_templates": 1, "verify.k": 0, **extra}
    if synthesizer == "llm":
        over.update({"client.base_url": base_url, "client.model": "synth", "client.backoff_s": 0.01,
                     "verify.mode": "llm", "verify.model": "checker"})
        if verifier_url:
            over["verify.base_url"] = verifier_url
    return OmegaConf.to_container(compose("synthesis/default", [f"{k}={v}" for k, v in over.items()]))


def _stage(body):
    return {p.system.strip(): k for k, p in PROMPTS.items()}.get(body["messages"][0]["content"].strip())


def test_parse_proposal_reads_boxes_through_the_scaffold_and_rejects_bad_ones():
    roi = parse_proposal('{"box_2d": [100, 200, 500, 600], "label": "liver"}', 1000, 500, 0.001, 0.9)
    assert roi.kind == "box" and roi.box == (200.0, 50.0, 600.0, 250.0) and roi.origin == ORIGIN
    assert parse_proposal('{"region": "left lower lobe"}', 100, 100, 0.001, 0.9).text == "left lower lobe"
    for bad, code in (('{"box_2d": [0, 0, 1000, 1000]}', "propose_box_size"), ('{"box_2d": [5, 5, 1]}', "propose_bad_box"),
                      ('{"region": "at 30, 40"}', "propose_malformed"), ("no json", "propose_malformed")):
        with pytest.raises(SynthesisError) as err:
            parse_proposal(bad, 100, 100, 0.001, 0.9)
        assert err.value.reason == code


def test_llm_proposes_a_box_the_verifier_accepts(demo_samples, tmp_path):
    records = _roi_less(demo_samples)
    with H.LoopbackServer(H.LvkcScript(PROMPTS)) as synth, H.LoopbackServer(H.LvkcScript(PROMPTS)) as check:
        result = run_synthesis(records, _cfg(base_url=synth.base_url, verifier_url=check.base_url), tmp_path / "o")
    assert result.report["roi_proposals"] == {"proposed": 2, "accepted": {"box": 2}, "failed_by_reason": {}}
    assert {_stage(b) for b in check.requests} == {"roi_check", "verify"}  # the verifier checks the region
    assert "propose" in {_stage(b) for b in synth.requests}
    crops = [H.n_images(b) for b in check.requests if _stage(b) == "roi_check"]
    assert crops == [2, 2]  # the image and the crop of the proposed box
    on_box = [s for s in result.kept if s.rois[0].origin == ORIGIN]
    assert on_box and {s.rois[0].kind for s in result.kept} == {"box", "global"}  # the global RoI stays
    for s in on_box:
        roi = [p for p in s.provenance if p.stage == "roi"]
        assert len(roi) == 1 and roi[0].made_by == "llm:synth" and "verified by llm:checker" in roi[0].detail
        (region,), _ = parse_regions(s.trajectory.loc)
        assert region.coords == (250, 300, 700, 800)  # <LOC> carries the proposed box
    assert all(not [p for p in s.provenance if p.stage == "roi"] for s in result.kept if s.rois[0].kind == "global")


def test_a_text_proposal_and_a_refused_one(demo_samples, tmp_path):
    records = _roi_less(demo_samples)
    script = H.LvkcScript(PROMPTS, proposal={"region": "the right upper abdomen beneath the diaphragm"})
    with H.LoopbackServer(script) as server:
        result = run_synthesis(records, _cfg(base_url=server.base_url), tmp_path / "text")
    assert result.report["roi_proposals"]["accepted"] == {"text": 2}
    assert {s.rois[0].kind for s in result.kept} == {"text", "global"}
    records[0].rois = []  # no RoI at all: the global RoI is implicit, and stays beside the proposal
    with H.LoopbackServer(H.LvkcScript(PROMPTS)) as server:
        result = run_synthesis(records[:1], _cfg(base_url=server.base_url), tmp_path / "none")
    assert {s.rois[0].kind for s in result.kept} == {"box", "global"}
    with H.LoopbackServer(H.LvkcScript(PROMPTS, roi_relevant=False)) as server:
        result = run_synthesis(records, _cfg(base_url=server.base_url), tmp_path / "no")
    assert result.report["roi_proposals"]["failed_by_reason"] == {"roi_not_relevant": 2}
    assert {s.rois[0].kind for s in result.kept} == {"global"}
    assert all(s.metadata["roi_proposal"]["accepted"] is False for s in result.kept)


def test_template_path_keeps_the_global_roi(demo_samples, tmp_path):
    result = run_synthesis(_roi_less(demo_samples), _cfg("template"), tmp_path / "t")
    assert result.report["roi_proposals"]["proposed"] == 0
    assert {s.rois[0].kind for s in result.kept} == {"global"}


@pytest.mark.slow
def test_proposal_against_a_real_server(lf_api, demo_samples, tmp_path):
    """`llamafactory-cli api` serving the tiny random model: its text is no region, so the proposal fails with a
    reason on record and the record is still reasoned over the global RoI."""
    records = _roi_less(demo_samples, 1)
    cfg = _cfg(base_url=lf_api, **{"client.model": "tiny", "client.max_tokens": 24, "verify.model": "tiny"})
    result = run_synthesis(records, cfg, tmp_path / "real")
    props = result.report["roi_proposals"]
    assert props["proposed"] == 1 and props["accepted"] == {}
    (reason,) = props["failed_by_reason"]
    assert reason.startswith(("propose_", "roi_check_", "call_failed", "roi_not_relevant"))
    assert result.report["units"] == 1  # the global RoI only
    assert result.report["calls_made"] >= 2
