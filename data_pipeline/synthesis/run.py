"""The synthesis run: records in -> LVKC trajectories kept, or rejected with their reasons, and a report.

    medsage data synth run --records pool.jsonl --out out/synth [overrides]

1. read the records (``read_records``: a bad line names its file and line);
2. plan units, M RoIs x T templates per record (``rpa.plan_units``), or one unit per record
   for the Table 3 "Low-level Aug" baseline (``rpa.mode=low_level``), and fix the order they are
   drafted in before any call (``draw.draw_order``: seeded, round-robin over RoIs and templates);
3. draft, check and verify round by round (``verify``), concurrently with a progress bar: each round
   drafts only as many units as are still missing to ``rpa.target`` and to each image's
   ``rpa.max_per_image``; a rejected or duplicate unit is replaced by the next candidate (``draw.Draw``);
4. nothing to cap afterwards: the report gives drafts and calls per kept trajectory;
5. with ``rpa.retry_share`` > 0 (not the paper's), add SFT retry rows (``retry.py``: wrong τ1, request,
   ``<CHECK>`` span, corrected τ2) built from kept trajectories;
6. write ``kept.jsonl`` (one record per trajectory), ``rejected.jsonl`` (every unit not kept, with its
   reason, its attempts' reasons and last trajectory: the scorer's negatives), ``retry.jsonl``, SAGE-sft
   (kept + retry rows), and ``report.json`` (records in, kept, rejected per reason, retry rows, calls made,
   tokens used).

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
from medsage.data_pipeline.synthesis.draw import Draw, draw_order
from medsage.data_pipeline.synthesis.proposal import Proposer, needs_proposal, roi_provenance
from medsage.data_pipeline.synthesis.retry import RetryConfig, build_retry_rows, retry_report
from medsage.data_pipeline.synthesis.rpa import Unit, low_level_copies, plan_units, synthesizer_section
from medsage.data_pipeline.synthesis.verify import LLMVerifier, Outcome, synthesize_verified
from medsage.io import atomic_write_json, atomic_write_text
from medsage.records import Sample, read_records


# Said in the report, the summary line and the pipeline report of every run the template synthesizer made.
TEMPLATE_NOTE = "offline templates: not the paper's data"


def summary_line(report: dict) -> str:
    """One line for the log: who wrote the trajectories, how many were kept, what they cost."""
    who = (f"{report['synthesizer']} ({report['data_note']})" if report.get("data_note")
           else f"{report['synthesizer']} {report['model']}, verifier {report.get('verifier_model') or 'none'}")
    per = report.get("drafts_per_kept_trajectory")
    return (f"synthesis: {report['trajectories_kept']} trajectories kept of {report['units']} drafted "
            f"({report['units_planned']} planned) from {report['records_in']} records by {who}; "
            f"{per if per is not None else '-'} drafts and {report.get('calls_per_kept_trajectory') or 0} calls "
            f"per kept trajectory{_retry_clause(report)}")


def _retry_clause(report: dict) -> str:
    retry = report.get("retry") or {}
    return f"; {retry['rows']} SFT retry rows ({retry['share']:.0%} of SFT, not the paper's)" if retry.get("rows") else ""


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


def _verifier(cfg: dict, client: ChatClient | None, cache_dir: Path) -> tuple[LLMVerifier | None, ChatClient | None]:
    """The verifier, and its own client when ``verify.base_url`` names another endpoint than the synthesizer's."""
    verify = cfg.get("verify") or {}
    mode = verify.get("mode", "none")
    if mode == "none":
        return None, None
    if mode != "llm":
        raise ValueError(f"verify.mode must be none or llm, got {mode!r}")
    own = None
    if verify.get("base_url"):
        c = {**(cfg.get("client") or {}), "base_url": verify["base_url"],
             "model": verify.get("model") or (cfg.get("client") or {}).get("model")}
        if verify.get("api_key_env"):
            c["api_key_env"] = verify["api_key_env"]
        own = _client({"client": c}, cache_dir)
    chat = own or client
    if chat is None:
        raise ValueError("verify.mode=llm needs verify.base_url (or client.base_url) and verify.model (or client.model)")
    verifier = LLMVerifier(chat, load_prompts(cfg["prompts_file"])["verify"], verify.get("model"),
                           with_image=bool(verify.get("with_image", True)))
    return verifier, own


async def _same(sample: Sample) -> Sample:
    return sample


def _proposer(cfg: dict, client: ChatClient | None, verifier: LLMVerifier | None) -> Proposer | None:
    """The RoI proposer of the llm synthesizer (``roi_proposal``), checked by the verifier's model when there is one."""
    if not (cfg.get("roi_proposal") or {}).get("enabled", False) or client is None or cfg["synthesizer"] != "llm":
        return None
    checker, model = (verifier.client, verifier.model) if verifier else (client, None)
    return Proposer(client, checker, load_prompts(cfg["prompts_file"]), model, cfg["roi_proposal"])


def _kept_record(outcome: Outcome) -> Sample:
    unit, draft = outcome.unit, outcome.kept
    s = copy.deepcopy(unit.sample)
    s.id = unit.uid
    s.trajectory = draft.trajectory
    s.provenance = roi_provenance(unit.sample, unit.roi) + draft.provenance
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
    retry_cfg = RetryConfig.from_rpa(rpa)  # checked before anything is paid for
    templates = list(load_templates(cfg["templates_file"]))
    client = _client(cfg, out / layout.CACHE_DIR)
    synthesizer_cls = SYNTHESIZERS.get(cfg["synthesizer"])
    synthesizer = synthesizer_cls(synthesizer_section(synthesizer_cls, cfg), client)
    verifier, verifier_client = _verifier(cfg, client, out / layout.CACHE_DIR)
    clients = [c for c in (client, verifier_client) if c is not None]

    rejected = [s for s in samples if not s.kept]  # rejected upstream: carried so the counts reconcile
    proposer = _proposer(cfg, client, verifier)

    def plan(records: list[Sample]) -> tuple[list[Unit], Draw]:
        """M RoIs x T templates per record (one unit for the Low-level Aug baseline), in drafting order, so that
        the per-image cap and the SFT target are met before any draft is paid for."""
        planned: list[Unit] = []
        for s in records:
            units = plan_units(s, templates, max_rois=rpa.get("max_rois"), max_templates=rpa.get("max_templates"),
                               seed=seed, kinds=tuple(rpa.get("roi_kinds") or ("box", "text", "global")))
            planned += units[:1] if mode == "low_level" else units
        if mode == "low_level":
            return planned, Draw(planned, cap=None, target=None)
        return planned, Draw(draw_order(planned, seed), cap=int(rpa.get("max_per_image", 8)), target=rpa.get("target"))

    async def go() -> tuple[list[Sample], list[Unit], Draw, list[Outcome]]:
        try:
            records = [s for s in samples if s.kept]
            if proposer is not None:  # RoI-less records: a proposed, verified region first
                records = list(await asyncio.gather(*(proposer.propose(s) if needs_proposal(s) else _same(s)
                                                      for s in records)))
            planned, draw = plan(records)
            # Draft, check and verify round by round; a rejected or duplicate unit is replaced by the next one.
            done: list[Outcome] = []
            while batch := draw.next_round():
                outcomes = await _run_units(batch, synthesizer, verifier, int((cfg.get("verify") or {}).get("k", 2)),
                                            limit=4 * (clients[0].cfg.concurrency if clients else 8))
                for o in outcomes:
                    if o.kept is not None and not draw.accept(o.unit, o.kept.trajectory):
                        o.duplicate = True
                done += outcomes
            return records, planned, draw, done
        finally:
            for c in clients:
                await c.aclose()

    records, planned, draw, outcomes = asyncio.run(go())
    pairs = [(o.unit, _kept_record(o)) for o in outcomes if o.kept is not None and not o.duplicate]
    kept = [s for _, s in pairs]
    rejected += [_unit_rejection(o) for o in outcomes if o.kept is None]
    rejected += [_rejected_record(_kept_record(o), "duplicate") for o in outcomes if o.duplicate]

    if mode == "low_level":  # the original plus its perturbed copies, all with the one trajectory
        n = int(rpa.get("low_level_copies", 4))
        kept = [c for s in kept for c in [s, *low_level_copies(s, n, out / "images_lowaug", seed=seed)]]
    retries = build_retry_rows(pairs, synthesizer, retry_cfg, len(kept), seed)  # rpa.retry_share: not the paper's

    # Write: every file atomically, the report last (its presence marks a finished run).
    # Redacted as a whole: a reply or an error body that echoes a key never reaches the disk.
    atomic_write_text(out / layout.KEPT, redact("".join(s.to_json() + "\n" for s in kept)))
    atomic_write_text(out / layout.REJECTED, redact("".join(s.to_json() + "\n" for s in rejected)))
    atomic_write_text(out / layout.RETRY, redact("".join(s.to_json() + "\n" for s in retries)))
    output = cfg.get("output") or {}
    if output.get("sft", True) and kept:
        from medsage.data_pipeline.writers import write_llava_sft
        from medsage.prompts import PromptConfig

        prompt = PromptConfig.from_cfg(cfg["prompt"]) if cfg.get("prompt") else PromptConfig.load()
        write_llava_sft(kept + retries, out / layout.SFT_DIR, name=output.get("sft_name", "sage_sft"), prompt=prompt,
                        note=TEMPLATE_NOTE if cfg["synthesizer"] == "template" else None)
    models = (client.cfg.model if client else None, (verifier.model or verifier.client.cfg.model) if verifier else None)
    report = _report(samples, planned, draw, outcomes, kept, rejected, clients, models, cfg, time.monotonic() - started)
    report["roi_proposals"] = _proposal_counts(records)
    report["retry"] = retry_report(retry_cfg, pairs, retries, len(kept))
    report = json.loads(redact(json.dumps(report)))
    atomic_write_json(out / layout.SYNTH_REPORT, report)
    return RunResult(kept, rejected, report)


def _unit_rejection(outcome: Outcome) -> Sample:
    s = _rejected_record(outcome.unit.sample, outcome.reason, _synth_meta(outcome))
    s.id = outcome.unit.uid
    s.rois = [outcome.unit.roi]
    return s


def _proposal_counts(records: list[Sample]) -> dict:
    """RoI-less records given a proposed region: proposed, accepted (box / text), and why the others failed."""
    metas = [r.metadata["roi_proposal"] for r in records if "roi_proposal" in r.metadata]
    accepted = Counter(m["kind"] for m in metas if m["accepted"])
    failed = Counter(m["reason"].split(":")[0] for m in metas if not m["accepted"])
    return {"proposed": len(metas), "accepted": dict(accepted), "failed_by_reason": dict(failed.most_common())}


def _usage(clients: list[ChatClient]) -> dict:
    """The synthesizer's and the verifier's usage added up (one client when they share the endpoint)."""
    total: dict = Usage().to_dict()
    for c in clients:
        for k, v in c.usage.to_dict().items():
            total[k] = dict(Counter(total[k]) + Counter(v)) if isinstance(v, dict) else total[k] + v
    return total


def _report(samples, planned, draw: Draw, outcomes, kept, rejected, clients, models, cfg, seconds: float) -> dict:
    with_traj = {s.metadata["synth"]["record_id"] for s in kept if "synth" in s.metadata}
    attempts = sum(len(o.attempts) + (o.kept is not None) for o in outcomes)
    all_reasons = Counter(r.code for o in outcomes for a in o.attempts for r in a.reasons)
    usage = _usage(clients)
    return {
        "synthesizer": cfg["synthesizer"],
        "model": models[0],
        "verifier_model": models[1],
        # The template synthesizer writes pixel statistics and fixed sentences: never mistake it for A.3.4's data.
        "data_note": TEMPLATE_NOTE if cfg["synthesizer"] == "template" else None,
        "records_in": len(samples),
        "records_rejected_upstream": sum(not s.kept for s in samples),
        "records_with_trajectories": len(with_traj),
        "records_without_trajectories": sum(s.kept for s in samples) - len(with_traj),
        "units_planned": len(planned),
        "units": len(outcomes),  # drafted: the rest of the plan was never needed, so never paid for
        "units_not_drafted": len(planned) - len(outcomes),
        "draw_rounds": draw.rounds,
        "sft_target": (cfg.get("rpa") or {}).get("target"),
        "trajectories_kept": len(kept),
        "target_shortfall": max(0, ((cfg.get("rpa") or {}).get("target") or 0) - len(kept)),
        "draft_attempts": attempts,
        # Drafted trajectories (regenerations included) per kept one: what RPA's waste costs.
        "drafts_per_kept_trajectory": round(attempts / len(kept), 3) if kept else None,
        "calls_per_kept_trajectory": round(usage["calls"] / len(kept), 3) if kept else None,
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
