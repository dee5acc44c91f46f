"""The synthesis run with the LLM synthesizer and verifier.

- Keep, regeneration and rejection paths against a SCRIPTED loopback server (synth_server.LvkcScript):
  a real model cannot be told to leak a label once or to judge a trajectory inconsistent on demand.
- Resume after kill: the CLI in a subprocess is killed mid-run; the rerun repeats no answered call.
- Against a real OpenAI-compatible server (slow): `llamafactory-cli api` serving the tiny random model;
  its random text exercises the rejection paths end to end, and a rerun is answered from the cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import synth_server as H  # tests/helpers (pytest pythonpath)
from omegaconf import OmegaConf

from medsage.data_pipeline.synthesis.cli import main
from medsage.data_pipeline.synthesis.prompts import load_prompts
from medsage.data_pipeline.synthesis.run import run_synthesis
from medsage.data_pipeline.synthesis.verify import PROBLEM_KINDS
from medsage.records import RoI, read_records, write_records
from medsage.recipes import compose
from medsage.scaffold import check_strict, parse_regions


PROMPTS = load_prompts("synthesis/prompts.yaml")
SECRET = "sk-synth-test-secret-2718281828"


def _records(demo_samples, n):
    """Demo samples with a box, a text and the global RoI, no trajectory (what `medsage data` hands over)."""
    out = []
    for s in demo_samples[:n]:
        s.trajectory = None
        s.rois = [s.rois[0], RoI("text", text="upper abdomen", label="anatomical location", origin="text-cue"),
                  RoI("global", box=(0, 0, 112, 112), label="full image", origin="global")]
        out.append(s)
    return out


def _overrides(base_url, **extra):
    over = {"synthesizer": "llm", "client.base_url": base_url, "client.model": "scripted",
            "client.api_key_env": "MEDSAGE_SYNTH_TEST_KEY", "client.backoff_s": 0.01, "client.concurrency": 4,
            "rpa.max_templates": 2, "verify.mode": "llm", "verify.k": 1, **extra}
    return [f"{k}={v}" for k, v in over.items()]


def _cfg(base_url, **extra):
    return OmegaConf.to_container(compose("synthesis/default", _overrides(base_url, **extra)))


def _no_secret_in(folder: Path):
    for f in folder.rglob("*"):
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f


def test_llm_run_keeps_regenerates_and_rejects(demo_samples, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAGE_SYNTH_TEST_KEY", SECRET)
    records = _records(demo_samples, 4)  # organs liver, lung, kidney, bone
    # Knowledge names the label the first time each prompt is asked (regenerated once, then kept);
    # the verifier rejects every trajectory whose reference answer is the kidney (k=1: two attempts).
    script = H.LvkcScript(PROMPTS, leak_first_know=True, leak_word="liver", reject_if="kidney")
    with H.LoopbackServer(script) as server:
        result = run_synthesis(records, _cfg(server.base_url), tmp_path / "out")
    rep = result.report
    assert rep["units"] == 4 * 3 * 2
    assert rep["trajectories_kept"] + rep["rejected"] == rep["units"]
    assert rep["calls_made"] == len(server.requests) > 0
    assert rep["prompt_tokens"] == 11 * rep["calls_made"] and rep["tokens_used"] > 0

    kidney = [s for s in result.rejected if s.answer == "kidney"]
    assert kidney and all(s.rejection == "cross_stage_contradiction" for s in kidney)
    assert rep["rejected_by_reason"]["cross_stage_contradiction"] == len(kidney)
    for s in kidney:  # every attempt's trajectory and reasons are kept: the scorer's negatives
        attempts = s.metadata["synth"]["failed_attempts"]
        assert len(attempts) == 2 and all(a["trajectory"] for a in attempts)

    liver = [s for s in result.kept if s.metadata["synth"]["record_id"] == records[0].id]
    assert liver, "the liver record's trajectories are kept after one regeneration"
    for s in liver:
        (failed,) = s.metadata["synth"]["failed_attempts"]
        assert failed["reasons"][0].startswith("label_in_knowledge")
    for s in result.kept:
        box = s.rois[0].kind in ("box", "global")
        assert check_strict(s.trajectory.render(), require_region=box)[1] == []
        assert bool(parse_regions(s.trajectory.loc)[0]) == box
        assert {p.stage for p in s.provenance} == {"loc", "vis", "know", "con"}

    # Eq. 2: the visual analysis of a box RoI sees the full image and the crop; others the full image.
    vis_images = sorted({H.n_images(b) for b in server.requests
                         if PROMPTS["vis"].system.strip() == b["messages"][0]["content"].strip()})
    assert vis_images == [1, 2]
    verify_images = {H.n_images(b) for b in server.requests
                     if PROMPTS["verify"].system.strip() == b["messages"][0]["content"].strip()}
    assert verify_images == {1}  # the verifier sees the image (verify.with_image, default true)
    # loc and vis depend on the RoI only: asked once per (RoI, attempt), never once per template.
    assert script.stages["loc"] < rep["units"]
    _no_secret_in(tmp_path / "out")


def test_rerun_makes_no_call(demo_samples, tmp_path):
    records = _records(demo_samples, 2)
    with H.LoopbackServer(H.LvkcScript(PROMPTS)) as server:
        first = run_synthesis(records, _cfg(server.base_url), tmp_path / "out").report
        n = len(server.requests)
        second = run_synthesis(records, _cfg(server.base_url), tmp_path / "out").report
    assert n > 0 and len(server.requests) == n
    assert second["calls_made"] == 0 and second["cache_hits"] > 0
    assert second["trajectories_kept"] == first["trajectories_kept"]


def test_resume_after_kill_repeats_no_answered_call(demo_samples, tmp_path):
    records = _records(demo_samples, 3)
    write_records(tmp_path / "pool.jsonl", records)
    out = tmp_path / "out"
    held = H.LvkcScript(PROMPTS, hold_after=10)  # answers 10 requests, then holds every other one
    with H.LoopbackServer(held) as server:
        cmd = [sys.executable, "-c", "import sys; from medsage.data_pipeline.synthesis.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(out),
               *_overrides(server.base_url)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            while len(list((out / "cache").rglob("*.json"))) < 10:  # the answered calls reach the cache
                assert proc.poll() is None and time.time() < deadline, "the run ended or stalled early"
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
            held.release.set()
    assert len(held.answered) == 10
    assert not (out / "report.json").exists() and not (out / "kept.jsonl").exists()  # no half outputs

    fresh = H.LvkcScript(PROMPTS)
    with H.LoopbackServer(fresh) as server2:
        assert main(["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(out),
                     *_overrides(server2.base_url)]) == 0
    # Nothing answered before the kill is asked again; what was held (never answered) is.
    assert not set(held.answered) & set(fresh.answered)
    report = json.loads((out / "report.json").read_text())
    assert report["calls_made"] == len(fresh.answered) > 0 and report["cache_hits"] >= 10
    assert report["trajectories_kept"] > 0


# Against a real OpenAI-compatible server: the `lf_api` fixture (tests/conftest.py).
@pytest.mark.slow
def test_against_llamafactory_api(lf_api, demo_samples, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAGE_SYNTH_TEST_KEY", SECRET)
    records = _records(demo_samples, 2)
    write_records(tmp_path / "pool.jsonl", records)
    over = _overrides(lf_api, **{"client.model": "tiny", "client.max_tokens": 24, "client.concurrency": 2,
                                    "rpa.max_rois": 2, "rpa.max_templates": 1, "verify.k": 0})
    assert main(["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "out"), *over]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["units"] == 4 and report["model"] == "tiny"
    assert report["calls_made"] > 0 and report["prompt_tokens"] > 0 and report["completion_tokens"] > 0
    # Random text cannot keep the rules: every unit ends rejected, each with a reason on disk.
    rejected = list(read_records(tmp_path / "out" / "rejected.jsonl"))
    assert report["trajectories_kept"] + len(rejected) == 4
    assert all(r.rejection for r in rejected) and sum(report["rejected_by_reason"].values()) == len(rejected)
    known = {"con_malformed", "coordinates_in_loc", "label_in_knowledge", "answer_mismatch", "verifier_unparseable",
             "image_cap", "duplicate", *PROBLEM_KINDS, "other_problem"}
    reasons = set(report["attempt_failures_by_reason"])
    assert reasons and all(r in known or r.startswith(("scaffold_", "call_failed:")) for r in reasons), reasons
    _no_secret_in(tmp_path / "out")

    calls = report["calls_made"]
    assert main(["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "out"), *over]) == 0
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert again["calls_made"] == 0 and again["cache_hits"] >= calls
    assert again["rejected_by_reason"] == report["rejected_by_reason"]

    # The verification path on the real server: template trajectories pass every rule, then the tiny
    # model judges them; its random text is no verdict, so each one is rejected as unparseable.
    verified = _overrides(lf_api, **{"synthesizer": "template", "client.model": "tiny", "client.max_tokens": 16,
                                        "rpa.max_rois": 2, "rpa.max_templates": 1, "verify.k": 0})
    assert main(["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "v"), *verified]) == 0
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["calls_made"] == 4 and report["rejected_by_reason"] == {"verifier_unparseable": 4}


def test_cli_errors_are_clear(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "source": "s"}\n')
    assert main(["run", "--records", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1" in capsys.readouterr().err
    (tmp_path / "ok.jsonl").write_text("")
    assert main(["run", "--records", str(tmp_path / "ok.jsonl"), "--out", str(tmp_path / "o"), "synthesizer=lm"]) == 2
    assert "Did you mean 'llm'" in capsys.readouterr().err
    assert main(["run", "--records", str(tmp_path / "ok.jsonl"), "--out", str(tmp_path / "o"), "synthesizer=llm"]) == 2
    assert "client" in capsys.readouterr().err


def test_wrong_key_stops_the_run_and_leaks_nothing(demo_samples, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDSAGE_SYNTH_TEST_KEY", SECRET)
    records = _records(demo_samples, 3)
    write_records(tmp_path / "pool.jsonl", records)

    def script(body, headers):  # like a real API: the 401 message quotes the key it was given
        key = headers.get("authorization", "").removeprefix("Bearer ")
        return 401, {"error": {"message": f"Incorrect API key provided: {key}", "code": "invalid_api_key"}}, 0.0

    with H.LoopbackServer(script) as server:
        rc = main(["run", "--records", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "out"),
                   *_overrides(server.base_url)])
    err = capsys.readouterr().err
    assert rc == 2 and "MEDSAGE_SYNTH_TEST_KEY" in err and SECRET not in err
    assert len(server.requests) < 3 * 3 * 2  # stopped, instead of failing every unit one by one
    assert not (tmp_path / "out" / "report.json").exists()
    if (tmp_path / "out").exists():
        _no_secret_in(tmp_path / "out")
