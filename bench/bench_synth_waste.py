"""Paid drafts per kept trajectory: RPA units chosen before any call vs drafting every unit and capping after.

    .venv/bin/python bench/bench_synth_waste.py [--records 24] [--reject 0.15] [--cap 8] [--target 0]

Runs the LLM synthesizer with the verifier (``verify.mode=llm``, k=2 regenerations) against the scripted
loopback server of tests/helpers (no model: it answers each stage; its verifier refuses a given share of
verifications, each one independently, chosen by a hash). Each record has 6 RoIs x 4 templates = 24 candidate
units, the cap keeps 8 per image. Prints drafted units, kept trajectories, drafts and API calls per kept
trajectory, and the drafts per kept that drafting all 24 candidates before capping would cost.
Goal: <= 1.3 drafts per kept trajectory with the verifier.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=24)
    parser.add_argument("--reject", type=float, default=0.15, help="share of trajectories the verifier refuses")
    parser.add_argument("--cap", type=int, default=8, help="rpa.max_per_image")
    parser.add_argument("--target", type=int, default=0, help="rpa.target (0: none)")
    args = parser.parse_args()

    import synth_server as H
    from omegaconf import OmegaConf

    from medsage.data_pipeline.synthesis.prompts import load_prompts
    from medsage.data_pipeline.synthesis.run import run_synthesis
    from medsage.launch.demo.samples import make_demo_samples
    from medsage.records import RoI
    from medsage.recipes import compose

    prompts = load_prompts("synthesis/prompts.yaml")
    lvkc = H.LvkcScript(prompts)
    verify_system = prompts["verify"].system.strip()
    seen: Counter = Counter()

    def script(body, headers):
        status, payload, delay = lvkc(body, headers)
        if body["messages"][0]["content"].strip() == verify_system:
            # Each verification refuses independently: a regeneration (same text from this script, new text
            # from a model) is judged afresh, as a model's new draft would be.
            text = H.user_text(body)
            seen[text] += 1
            digest = hashlib.sha256(f"{text}#{seen[text]}".encode()).digest()
            if digest[0] < 256 * args.reject:
                payload = H.completion(json.dumps({"consistent": False, "problems": [
                    {"kind": "unsupported_step", "detail": "refused by the bench's share"}]}))
        return status, payload, delay

    with tempfile.TemporaryDirectory() as tmp:
        samples = make_demo_samples(Path(tmp) / "data", n=args.records)
        for s in samples:
            s.trajectory = None
            x1, y1, x2, y2 = s.rois[0].box
            w, h = s.metadata.get("image_size") or (112, 112)
            s.rois = [s.rois[0], *(RoI("box", box=(max(0, x1 - d), max(0, y1 - d), min(w, x2 + d), min(h, y2 + d)),
                                       label=s.rois[0].label, origin="expand") for d in (2, 4, 6)),
                      RoI("text", text="upper abdomen", label="anatomical location", origin="text-cue"),
                      RoI("global", box=(0, 0, w, h), label="full image", origin="global")]
        with H.LoopbackServer(script) as server:
            over = {"synthesizer": "llm", "client.base_url": server.base_url, "client.model": "scripted",
                    "client.backoff_s": 0.01, "verify.mode": "llm", "verify.k": 2, "rpa.max_per_image": args.cap,
                    "rpa.target": args.target or "null", "roi_proposal.enabled": "false"}
            cfg = OmegaConf.to_container(compose("synthesis/default", [f"{k}={v}" for k, v in over.items()]))
            rep = run_synthesis(samples, cfg, Path(tmp) / "out").report
    kept = rep["trajectories_kept"]
    all_first = rep["units_planned"] * rep["draft_attempts"] / max(1, rep["units"]) / max(1, kept)
    print(f"records {rep['records_in']}  units planned {rep['units_planned']}  drafted {rep['units']}  "
          f"rounds {rep['draw_rounds']}  kept {kept}  (verifier refuses ~{args.reject:.0%})")
    print(f"drafted but not kept, by reason: {rep['rejected_by_reason']}")
    print(f"drafts per kept trajectory:  {rep['drafts_per_kept_trajectory']:.3f}  (goal <= 1.3)")
    dups = rep["rejected_by_reason"].get("duplicate", 0)
    print(f"  without the {dups} duplicates the script's identical replies make across images (a model's "
          f"text differs per image): {(rep['draft_attempts'] - dups) / kept:.3f}")
    print(f"API calls per kept trajectory: {rep['calls_per_kept_trajectory']:.3f}  "
          f"(4 stage calls + 1 verification per draft; loc/vis shared by a RoI's templates)")
    print(f"drafting all {rep['units_planned']} units, then capping: ~{all_first:.3f} drafts per kept "
          f"-> {all_first / rep['drafts_per_kept_trajectory']:.1f}x the paid drafts")


if __name__ == "__main__":
    main()
