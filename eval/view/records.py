"""Readers of data files: records and rejections (data run, synthesis run) and LLaVA SFT data."""

from __future__ import annotations

import json
from pathlib import Path

from medsage.data_pipeline import layout as data_layout
from medsage.eval.view.items import (
    ViewItem,
    final_answer,
    image_ref,
    json_lines,
    malformed,
    trace_from_text,
    trace_from_trajectory,
    traces_from_response,
)

from medsage.vocab import IMAGE_PLACEHOLDER

# --------------------------------------------------------------------------------------------
# Records (data run, synthesis run) and rejections
# --------------------------------------------------------------------------------------------


def is_sample(obj: dict) -> bool:
    return {"question", "question_type", "images"} <= set(obj)


def is_rejection(obj: dict) -> bool:
    return {"source", "key", "reason"} <= set(obj) and "question" not in obj


def _record_item(obj: dict, where: str, base: Path) -> ViewItem:
    """A ``medsage.records.Sample`` line: kept, or rejected with its reason and failed attempts."""
    from medsage.records import RecordError, Sample

    try:
        s = Sample.from_dict(obj)
    except RecordError as err:
        item = malformed(where, f"not a valid record ({err})", json.dumps(obj)[:4000])
        item.id = str(obj.get("id") or item.id)
        item.source, item.question = obj.get("source"), obj.get("question")
        return item
    item = ViewItem(id=s.id, kind="record", where=where, source=s.source, question_type=s.question_type,
                    modality=s.modality, question=s.question, options=s.options, ground_truth=s.answer,
                    verdict="kept" if s.kept else "rejected",
                    images=[image_ref(p, base) for p in s.images])
    if not s.images:
        item.problems.append("record has no image")
    synth = s.metadata.get("synth") if isinstance(s.metadata, dict) else None
    if s.trajectory is not None:
        item.traces.append(trace_from_trajectory("trajectory", s.trajectory))
    elif not synth:
        item.details["trajectory"] = "none yet (trajectory synthesis is the next stage)"
    for n, attempt in enumerate((synth or {}).get("failed_attempts") or [], 1):
        reasons = [str(r) for r in attempt.get("reasons") or []]
        item.reasons += [f"attempt {n}: {r}" for r in reasons]
        if attempt.get("trajectory"):
            t = trace_from_text(f"attempt {n} (failed)", attempt["trajectory"], final=False)
            t.notes = reasons + t.notes
            item.traces.append(t)
    if item.traces and not any(t.final for t in item.traces):
        item.traces[-1].final = True  # the last failed attempt is the one the rejection names
    if not s.kept:
        item.reason_codes.append(s.rejection)
        item.reasons.insert(0, f"rejected: {s.rejection}")
    item.answer = final_answer(item.traces)
    for roi in s.rois:
        if roi.kind == "box" and roi.box:
            item.rois.append({"box": list(roi.box), "label": roi.label, "origin": roi.origin})
        elif roi.kind == "text":
            item.details.setdefault("RoI text", []).append(roi.text)
    if s.provenance:
        item.details["provenance"] = [f"{p.stage}: {p.made_by}" + (f" ({p.detail})" if p.detail else "")
                                      for p in s.provenance]
    meta = {k: v for k, v in (s.metadata or {}).items() if k != "synth"}
    if synth:
        meta["synth"] = {k: v for k, v in synth.items() if k != "failed_attempts"}
    if meta:
        item.details["metadata"] = meta
    return item


def _rejection_item(obj: dict, where: str, base: Path) -> ViewItem:
    """A ``data_pipeline.ingest.Rejection`` line: an input dropped before it became a record."""
    reason, detail = str(obj.get("reason")), str(obj.get("detail") or "")
    item = ViewItem(id=str(obj.get("key")), kind="rejection", where=where, source=obj.get("source"),
                    verdict="rejected", reason_codes=[reason],
                    reasons=[f"rejected: {reason}" + (f" — {detail}" if detail else "")],
                    images=[image_ref(p, base) for p in obj.get("images") or []])
    item.details["note"] = "rejected at ingest: no question or trajectory was made for this input"
    return item


def records_file(path: Path, base: Path | None = None) -> list[ViewItem]:
    base = base or path.parent
    items = []
    for n, obj, error, raw in json_lines(path):
        where = f"{path}:{n}"
        if obj is None:
            items.append(malformed(where, error, raw))
        elif is_rejection(obj):
            items.append(_rejection_item(obj, where, base))
        else:
            items.append(_record_item(obj, where, base))
    return items


# --------------------------------------------------------------------------------------------
# SFT (LLaVA / ShareGPT JSON)
# --------------------------------------------------------------------------------------------


def split_prompt(text: str) -> tuple[str, dict[str, str] | None]:
    """Undo ``medsage.prompts``: ``question\\nOptions:\\nA. text\\n<instruction>`` -> (question, options).

    The option lines end at the first line that is not ``<letter>. text`` (the instruction follows them).
    """
    text = text.strip()
    question, sep, listed = text.partition("\nOptions:\n")
    if not sep:
        return text, None
    options = {}
    for line in listed.splitlines():
        letter, dot, rest = line.partition(". ")
        if not dot or len(letter.strip()) != 1 or not letter.strip().isalpha():
            break
        options[letter.strip()] = rest.strip()
    return (question, options) if options else (text, None)


def sft_file(path: Path) -> list[ViewItem]:
    data = json.loads(path.read_text(encoding="utf-8"))
    # Records beside the SFT folder carry what the LLaVA file does not: source, modality, ground truth.
    by_id: dict[str, dict] = {}
    for cand in (path.parent.parent / data_layout.RECORDS, path.parent.parent / data_layout.KEPT):
        if cand.is_file():
            for _, obj, _, _ in json_lines(cand):
                if obj and "id" in obj:
                    by_id[str(obj["id"])] = obj
            break
    items = []
    for n, ex in enumerate(data):
        where = f"{path}[{n}]"
        if not isinstance(ex, dict) or not isinstance(ex.get("conversations"), list):
            items.append(malformed(where, "not a ShareGPT example (needs a 'conversations' list)", json.dumps(ex)[:4000]))
            continue
        turns = ex["conversations"]
        human = next((t.get("value", "") for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
        gpt = next((t.get("value", "") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
        images = ex.get("images") or []
        item = ViewItem(id=str(ex.get("id", n)), kind="sft", where=where, verdict="training example",
                        images=[image_ref(p, path.parent) for p in images])
        if human is None or gpt is None:
            item.problems.append("needs one 'human' and one 'gpt' turn")
        text = (human or "")
        if text.count(IMAGE_PLACEHOLDER) != len(images):
            item.problems.append(f"{text.count(IMAGE_PLACEHOLDER)} {IMAGE_PLACEHOLDER} placeholder(s) for "
                                 f"{len(images)} image(s)")
        item.question, item.options = split_prompt(text.replace(IMAGE_PLACEHOLDER, ""))
        item.traces, item.check, problems = traces_from_response(gpt or "")
        item.problems += problems
        item.answer = final_answer(item.traces)
        rec = by_id.get(item.id)
        if rec:
            item.source, item.modality = rec.get("source"), rec.get("modality")
            item.question_type, item.ground_truth = rec.get("question_type"), rec.get("answer")
            # The record's own question: the human turn also holds the prompt's instruction (medsage.prompts).
            item.question, item.options = rec.get("question") or item.question, rec.get("options") or item.options
            item.details["record"] = "source, modality and ground truth from the records beside the SFT folder"
        else:
            item.details["ground truth"] = "not in the SFT file (the trajectory's answer is the training target)"
        items.append(item)
    return items


