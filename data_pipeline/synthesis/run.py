"""The synthesis run: records in -> LVKC trajectories kept, or rejected with their reasons, and a report.

    medsage data synth run --records pool.jsonl --out out/synth [overrides]

1. read the records (``read_records``: a bad line names its file and line);
2. plan units, M RoIs x T templates per record (``synth_rpa.plan_units``), or one unit per record
   for the Table 3 "Low-level Aug" baseline (``rpa.mode=low_level``);
3. draft, check and verify every unit concurrently (``synth_verify``), with a progress bar;
4. drop duplicates and cap each image (``synth_rpa.select_per_image``);
5. write ``kept.jsonl`` (one record per trajectory), ``rejected.jsonl`` (every unit not kept, with its
   reason, its attempts' reasons and last trajectory: the scorer's negatives), SAGE-sft, and
   ``report.json`` (records in, kept, rejected per reason, calls made, tokens used).

Every call goes through the disk cache in ``<out>/cache``: an interrupted run, rerun, resumes
without repeating a call that had been answered. All files are written atomically.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medsage.chat import ChatClient, Usage, client_config, redact
from medsage.data_pipeline import layout
from medsage.data_pipeline.synthesis.prompts import load_prompts, load_templates
from medsage.data_pipeline.synthesis.rpa import Unit, low_level_copies, plan_units, select_per_image
from medsage.data_pipeline.synthesis.verify import LLMVerifier, Outcome, synthesize_verified
from medsage.io import atomic_write_json, atomic_write_text
from medsage.records import Sample, read_records


@dataclass
class RunResult:
    kept: list[Sample]
    rejected: list[Sample]
    report: dict


def _client(cfg: dict, cache_dir: Path) -> ChatClient | None:
    """The endpoint's client, or None when the recipe names no endpoint (template synthesizer)."""
    c = cfg.get("client") or {}
    if not c.get("base_url") or c.get("base_url") == "???" or not c.get("model") or c.get("model") == "???":
        client_config({**c, "base_url": "http://unset", "model": "unset"})  # a key in the recipe is refused anyway
        return None
    return ChatClient(client_config(c, cache_dir=str(cache_dir)))


def _verifier(cfg: dict, client: ChatClient | None) -> LLMVerifier | None:
    verify = cfg.get("verify") or {}
    mode = verify.get("mode", "none")
    if mode == "none":
        return None
    if mode != "llm":
        raise ValueError(f"verify.mode must be none or llm, got {mode!r}")
    if client is None:
        raise ValueError("verify.mode=llm needs client.base_url and client.model")
    return LLMVerifier(client, load_prompts(cfg["prompts_file"])["verify"], verify.get("model"),
                       with_image=bool(verify.get("with_image", True)))


def _kept_record(outcome: Outcome) -> Sample:
    unit, draft = outcome.unit, outcome.kept
    s = copy.deepcopy(unit.sample)
    s.id = unit.uid
    s.trajectory = draft.trajectory
    s.provenance = draft.provenance
    s.rois = [unit.roi]
    s.metadata = {**s.metadata, "synth": _synth_meta(outcome)}
    return s


def _synth_meta(outcome: Outcome) -> dict:
    unit = outcome.unit
    return {"record_id": unit.sample.id, "roi_index": unit.roi_index, "roi_kind": unit.roi.kind,
            "roi_origin": unit.roi.origin, "template": unit.template,
            "attempts": len(outcome.attempts) + (outcome.kept is not None),
            "failed_attempts": [{"reasons": [str(r) for r in a.reasons], "trajectory": a.trajectory}
                                for a in outcome.attempts]}


def _rejected_record(sample: Sample, reason: str, meta: dict | None = None) -> Sample:
    s = copy.deepcopy(sample)
    s.rejection = reason
    if meta is not None:
        s.metadata = {**s.metadata, "synth": meta}
    return s


async def _run_units(units: list[Unit], synthesizer, verifier, k: int, limit: int) -> list[Outcome]:
    from tqdm import tqdm

    gate = asyncio.Semaphore(limit)  # units in flight; the client bounds requests separately

    async def one(unit: Unit) -> Outcome:
        async with gate:
            return await synthesize_verified(unit, synthesizer, verifier, k)

    tasks = [asyncio.ensure_future(one(u)) for u in units]
    try:
        with tqdm(total=len(tasks), desc="synthesis", unit="traj") as bar:
            for fut in asyncio.as_completed(tasks):
                await fut
                bar.update(1)
    except BaseException:  # a fatal error (wrong key) or an interrupt: stop every unit, then report it
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [t.result() for t in tasks]


def run_synthesis(records: str | Path | list[Sample], cfg: dict, out_dir: str | Path) -> RunResult:
    """Run the whole synthesis for ``records`` (a JSON-lines path or samples) into ``out_dir``.

    ``cfg`` is the composed ``recipes/synthesis/default.yaml`` as a plain dict. The output folder is
    locked for the run (``medsage.lock``): a second run into it stops at once instead of paying twice.
    """
    from medsage.lock import folder_lock

    with folder_lock(out_dir, "synthesis run"):
        return _run_synthesis(records, cfg, out_dir)


def _run_synthesis(records: str | Path | list[Sample], cfg: dict, out_dir: str | Path) -> RunResult:
    from medsage.registry import SYNTHESIZERS

    started = time.monotonic()
    out = Path(out_dir)
    samples = list(read_records(records)) if isinstance(records, (str, Path)) else list(records)
    rpa, seed = cfg.get("rpa") or {}, cfg.get("seed", 0)
    mode = rpa.get("mode", "rpa")
    if mode not in ("rpa", "low_level"):
        raise ValueError(f"rpa.mode must be rpa or low_level, got {mode!r}")
    templates = list(load_templates(cfg["templates_file"]))
    client = _client(cfg, out / layout.CACHE_DIR)
    synthesizer = SYNTHESIZERS.get(cfg["synthesizer"])(cfg, client)
    verifier = _verifier(cfg, client)

    # Plan: M RoIs x T templates per record (one unit per record for the Low-level Aug baseline).
    rejected = [s for s in samples if not s.kept]  # rejected upstream: carried so the counts reconcile
    units: list[Unit] = []
    for s in samples:
        if s.kept:
            planned = plan_units(s, templates, max_rois=rpa.get("max_rois"), max_templates=rpa.get("max_templates"),
                                 seed=seed, kinds=tuple(rpa.get("roi_kinds") or ("box", "text", "global")))
            units += planned[:1] if mode == "low_level" else planned

    # Draft, check and verify every unit; the client bounds the requests in flight.
    async def go() -> list[Outcome]:
        try:
            return await _run_units(units, synthesizer, verifier, int((cfg.get("verify") or {}).get("k", 2)),
                                    limit=4 * (client.cfg.concurrency if client else 8))
        finally:
            if client is not None:
                await client.aclose()

    outcomes = asyncio.run(go())
    kept = [_kept_record(o) for o in outcomes if o.kept is not None]
    rejected += [_unit_rejection(o) for o in outcomes if o.kept is None]

    # Augment: the baseline's perturbed copies, or RPA's dedup and per-image cap.
    if mode == "low_level":  # the original plus its perturbed copies, all with the one trajectory
        n = int(rpa.get("low_level_copies", 4))
        kept = [c for s in kept for c in [s, *low_level_copies(s, n, out / "images_lowaug", seed=seed)]]
    else:
        kept, dropped = select_per_image(kept, int(rpa.get("max_per_image", 8)))
        rejected += [_rejected_record(s, why) for s, why in dropped]

    # Write: every file atomically, the report last (its presence marks a finished run).
    # Redacted as a whole: a reply or an error body that echoes a key never reaches the disk.
    atomic_write_text(out / layout.KEPT, redact("".join(s.to_json() + "\n" for s in kept)))
    atomic_write_text(out / layout.REJECTED, redact("".join(s.to_json() + "\n" for s in rejected)))
    output = cfg.get("output") or {}
    if output.get("sft", True) and kept:
        from medsage.data_pipeline.writers import write_llava_sft

        write_llava_sft(kept, out / layout.SFT_DIR, name=output.get("sft_name", "sage_sft"))
    report = _report(samples, units, outcomes, kept, rejected, client, cfg, time.monotonic() - started)
    report = json.loads(redact(json.dumps(report)))
    atomic_write_json(out / layout.SYNTH_REPORT, report)
    return RunResult(kept, rejected, report)


def _unit_rejection(outcome: Outcome) -> Sample:
    s = _rejected_record(outcome.unit.sample, outcome.reason, _synth_meta(outcome))
    s.id = outcome.unit.uid
    s.rois = [outcome.unit.roi]
    return s


def _report(samples, units, outcomes, kept, rejected, client, cfg, seconds: float) -> dict:
    with_traj = {s.metadata["synth"]["record_id"] for s in kept if "synth" in s.metadata}
    all_reasons = Counter(r.code for o in outcomes for a in o.attempts for r in a.reasons)
    usage = (client.usage if client else Usage()).to_dict()
    return {
        "synthesizer": cfg["synthesizer"],
        "model": client.cfg.model if client else None,
        "records_in": len(samples),
        "records_rejected_upstream": sum(not s.kept for s in samples),
        "records_with_trajectories": len(with_traj),
        "records_without_trajectories": sum(s.kept for s in samples) - len(with_traj),
        "units": len(units),
        "trajectories_kept": len(kept),
        "rejected": len(rejected),
        "rejected_by_reason": dict(Counter(s.rejection for s in rejected).most_common()),
        "attempt_failures_by_reason": dict(all_reasons.most_common()),
        "calls_made": usage["calls"],
        "cache_hits": usage["cache_hits"],
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "tokens_used": usage["prompt_tokens"] + usage["completion_tokens"],
        "cost": usage["cost"],
        "retries_by_reason": usage["retries"],
        "failed_calls_by_reason": usage["failures"],
        # The calls/tokens/cost above are this invocation's; a resumed run answers from the cache and pays
        # little. What the whole output cost (every reply it used, whichever run paid for it):
        "dataset_total": {"replies": usage["output_replies"], "prompt_tokens": usage["output_prompt_tokens"],
                          "completion_tokens": usage["output_completion_tokens"],
                          "tokens": usage["output_prompt_tokens"] + usage["output_completion_tokens"],
                          "cost": usage["output_cost"]},
        "seconds": round(seconds, 2),
        "config": cfg,  # holds the NAME of the key's environment variable, never the key
    }
