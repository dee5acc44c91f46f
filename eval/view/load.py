"""Readers for ``medsage view``: every kind of file the project writes, turned into one item shape.

What ``medsage view PATH`` understands (``load`` detects the kind; anything else is an error naming
the file and what was looked for):

- an SFT data file: LLaVA/ShareGPT JSON (``data_pipeline.writers``: ``conversations`` from human/gpt,
  ``images``); records beside it (``../records.jsonl`` or ``../kept.jsonl``) add source, modality and
  ground truth by id;
- a pipeline run directory: ``medsage data run`` (``records.jsonl`` kept, ``rejected.jsonl`` rejections
  with reason and detail, ``summary.json``) or the synthesis run (``kept.jsonl``, ``rejected.jsonl``
  records with ``rejection`` and their failed attempts, ``report.json``), or one such JSON-lines file;
- an RL rollout dump: medsage's rollout JSON lines (``ROLLOUT_FIELDS`` below), verl's own
  ``trainer.rollout_data_dir`` files (``<step>.jsonl`` with input/output/gts/score/step and the reward
  components), or a directory of either;
- evaluation output: a predictions file (``eval.run``; verdicts from ``<stem>.verdicts.jsonl`` beside
  it, else scored here with ``eval.scoring``), a verdicts file (joined with its predictions file), or
  the run directory (``run.json``, ``<benchmark>/predictions.jsonl``).

Every trajectory is read with ``medsage.scaffold`` (lenient stages, strict issues, the self-check
split, the ``<LOC>`` regions). A malformed item (bad JSON line, unparseable stage, invalid region,
missing image) becomes an item whose ``problems`` name what is wrong; nothing is dropped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsage.scaffold import (
    ANSWER_TAG,
    STAGE_TAGS,
    Trajectory,
    check_strict,
    parse_lenient,
    parse_regions,
    split_retry,
)

STAGE_KEYS: tuple[str, ...] = (*STAGE_TAGS, "answer")  # loc, vis, know, con, answer

# medsage's RL rollout dump, one JSON object per line (defined here: verl's own dump has no images,
# options or spans). Required: response, ground_truth. Everything else is optional.
ROLLOUT_FIELDS = {
    "id": "row id (extra_info.id of the RL row)",
    "step": "training step",
    "data_source": "source of the RL row",
    "prompt": "the question text, or the chat list [{role, content}] sent to the policy",
    "response": "decoded response; a retry is τ1 [request] <CHECK>...</CHECK> τ2",
    "images": "image paths",
    "ground_truth": "reward_model.ground_truth",
    "question_type": "closed | choice | open",
    "options": "letter -> text for choice questions",
    "modality": "imaging modality",
    "rewards": "{overall, <component>: value, ...} as the reward returned them",
    "spans": "what the retry loop recorded (retried, first_correct, self_check_reward, ...); shown as is",
}


def rollout_record(response: str, ground_truth: str, *, prompt: Any = None, images: list[str] | None = None,
                   rewards: dict[str, float] | None = None, spans: dict | None = None, **extra: Any) -> dict:
    """One line of medsage's rollout dump (``ROLLOUT_FIELDS``), for the RL stage to write."""
    unknown = set(extra) - set(ROLLOUT_FIELDS)
    if unknown:
        raise ValueError(f"unknown rollout field(s) {sorted(unknown)}; known: {sorted(ROLLOUT_FIELDS)}")
    return {"response": response, "ground_truth": ground_truth, "prompt": prompt, "images": list(images or []),
            "rewards": dict(rewards or {}), "spans": dict(spans or {}), **extra}


class ViewerInputError(ValueError):
    """PATH is not something ``medsage view`` knows; the message names the file and what was expected."""


@dataclass
class ImageRef:
    path: str | None        # resolved path on this machine, when it exists
    given: str              # the path as the input wrote it
    problem: str | None = None
    width: int | None = None
    height: int | None = None


@dataclass
class Trace:
    """One trajectory as shown: its stages, regions and what the parsers said about it."""

    title: str
    stages: dict[str, str | None]
    preamble: str = ""
    regions: list[dict] = field(default_factory=list)  # {kind, coords, label}; pixels added later
    issues: list[str] = field(default_factory=list)    # strict format issues (informational)
    notes: list[str] = field(default_factory=list)     # how the lenient parser recovered stages
    problems: list[str] = field(default_factory=list)  # missing stages, invalid regions
    final: bool = True                                  # the trajectory whose answer counts


@dataclass
class ViewItem:
    id: str
    kind: str                                   # sft | record | rejection | rollout | prediction | malformed
    where: str                                  # file:line it came from
    source: str | None = None                   # source / benchmark / data_source
    question_type: str | None = None
    modality: str | None = None
    verdict: str = "unknown"                    # kept | rejected | correct | wrong | unparsed | unscored
    reason_codes: list[str] = field(default_factory=list)  # for the filter
    reasons: list[str] = field(default_factory=list)       # full text, shown
    question: str | None = None
    options: dict[str, str] | None = None
    ground_truth: str | None = None
    answer: str | None = None
    traces: list[Trace] = field(default_factory=list)
    check: str | None = None                    # the self-check span text
    rewards: dict[str, float] = field(default_factory=dict)
    judge: dict[str, float | None] = field(default_factory=dict)  # GPT-score per dimension (eval judge)
    images: list[ImageRef] = field(default_factory=list)
    rois: list[dict] = field(default_factory=list)  # annotation RoIs in pixels {box, label, origin}
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)

    def all_problems(self) -> list[str]:
        out = list(self.problems)
        for t in self.traces:
            out += [f"{t.title}: {p}" for p in t.problems]
        out += [f"image {i + 1}: {im.problem}" for i, im in enumerate(self.images) if im.problem]
        return out


@dataclass
class Loaded:
    kind: str           # what PATH was, in words
    path: Path
    items: list[ViewItem]
    notes: list[str] = field(default_factory=list)   # what was read, for the page header


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------


def _regions(loc: str | None) -> tuple[list[dict], list[str]]:
    regions, issues = parse_regions(loc or "")
    return ([{"kind": r.kind, "coords": list(r.coords), "label": r.label} for r in regions],
            [i.message for i in issues])


def trace_from_text(title: str, text: str, *, final: bool = True, expect_outside: bool = False) -> Trace:
    """Stages from model text: lenient for what is shown, strict for the issues listed beside it."""
    traj = parse_lenient(text)
    _, issues = check_strict(text, allow_preamble=True)
    if expect_outside:  # τ1 of a retry carries the self-check request after its answer
        issues = [i for i in issues if i.code != "text_outside"]
    regions, region_problems = _regions(traj.loc)
    problems = [f"<{tag}> not found" for key, tag in (*STAGE_TAGS.items(), ("answer", ANSWER_TAG))
                if not getattr(traj, key)]
    if not text.strip():
        problems = ["empty text"]
    return Trace(title, {k: getattr(traj, k) for k in STAGE_KEYS}, traj.preamble, regions,
                 [str(i) for i in issues], list(traj.notes), problems + region_problems, final)


def trace_from_trajectory(title: str, traj: Trajectory, *, final: bool = True) -> Trace:
    """Stages a record already holds; the strict check runs on their canonical rendering."""
    missing = [f"<{tag}> is empty" for key, tag in (*STAGE_TAGS.items(), ("answer", ANSWER_TAG))
               if not (getattr(traj, key) or "").strip()]
    issues: list[str] = []
    if not missing:
        _, found = check_strict(traj.render(), allow_preamble=True)
        issues = [str(i) for i in found]
    regions, region_problems = _regions(traj.loc)
    return Trace(title, {k: getattr(traj, k) for k in STAGE_KEYS}, traj.preamble, regions, issues, [],
                 missing + region_problems, final)


def traces_from_response(text: str) -> tuple[list[Trace], str | None, list[str]]:
    """τ1 / self-check / τ2 when the text is a retry, else one trajectory; plus item-level problems."""
    parts = split_retry(text)
    if parts is None:
        trace = trace_from_text("trajectory", text)
        problems = []
        if "used the revised trajectory after </CHECK>" in trace.notes:
            problems.append("the self-check span is not written exactly as <CHECK>...</CHECK>; "
                            "showing the trajectory after it as the lenient parser reads it")
        return [trace], None, problems
    first, check, second = parts
    traces = [trace_from_text("τ1 first try", first, final=False, expect_outside=True),
              trace_from_text("τ2 after self-check", second)]
    return traces, check.strip(), ([] if check.strip() else ["the self-check span is empty"])


def final_answer(traces: list[Trace]) -> str | None:
    finals = [t for t in traces if t.final] or traces
    return finals[-1].stages.get("answer") if finals else None


# --------------------------------------------------------------------------------------------
# Lines and images
# --------------------------------------------------------------------------------------------


def _json_lines(path: Path) -> Iterator[tuple[int, dict | None, str | None, str]]:
    """(line number, object or None, error or None, raw line) for every non-empty line."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield n, None, f"not valid JSON ({err.msg} at column {err.colno})", line
                continue
            if not isinstance(obj, dict):
                yield n, None, f"expected a JSON object, got {type(obj).__name__}", line
                continue
            yield n, obj, None, line


def _first_object(path: Path) -> dict | None:
    for _, obj, _, _ in _json_lines(path):
        if obj is not None:
            return obj
    return None


def _malformed(where: str, error: str, raw: str) -> ViewItem:
    return ViewItem(id=where.rsplit("/", 1)[-1], kind="malformed", where=where, verdict="malformed",
                    problems=[f"{where}: {error}"], details={"raw line": raw.strip()[:4000]})


def image_ref(given: Any, base: Path | None) -> ImageRef:
    """Resolve an image path against the input file's folder (then as given); name what is wrong."""
    if isinstance(given, dict):  # verl/EasyR1 rows: {"image": path} or {"bytes": ...}
        given = given.get("image") or given.get("path") or ("<embedded bytes>" if given.get("bytes") else "")
    given = str(given or "")
    if not given:
        return ImageRef(None, given, "no image path given")
    if given == "<embedded bytes>":
        return ImageRef(None, given, "image bytes embedded in the input are not shown")
    p = Path(given).expanduser()
    candidates = [p] if p.is_absolute() else ([base / p] if base else []) + [p]
    for c in candidates:
        resolved, size, error = _image_info(str(c))
        if resolved is not None:
            if error:
                return ImageRef(resolved, given, f"cannot read image {given}: {error}")
            return ImageRef(resolved, given, None, *size)
    return ImageRef(None, given, f"image not found: {given}")


@functools.lru_cache(maxsize=65536)
def _image_info(path: str) -> tuple[str | None, tuple[int, int], str | None]:
    """(resolved path or None when absent, (width, height), read error); cached: runs repeat images."""
    c = Path(path)
    if not c.is_file():
        return None, (0, 0), None
    try:
        from PIL import Image

        with Image.open(c) as im:  # reads the header only
            return str(c.resolve()), im.size, None
    except Exception as err:  # noqa: BLE001 - any unreadable image is shown as such
        return str(c.resolve()), (0, 0), str(err)


def _options(value: Any) -> dict[str, str] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            return {"?": value}
    if isinstance(value, list):  # parquet pairs
        value = dict(value)
    if not value:
        return None
    return {str(k): str(v) for k, v in sorted(value.items()) if v is not None}


# --------------------------------------------------------------------------------------------
# Records (data run, synthesis run) and rejections
# --------------------------------------------------------------------------------------------


def _is_sample(obj: dict) -> bool:
    return {"question", "question_type", "images"} <= set(obj)


def _is_rejection(obj: dict) -> bool:
    return {"source", "key", "reason"} <= set(obj) and "question" not in obj


def _record_item(obj: dict, where: str, base: Path) -> ViewItem:
    """A ``medsage.records.Sample`` line: kept, or rejected with its reason and failed attempts."""
    from medsage.records import RecordError, Sample

    try:
        s = Sample.from_dict(obj)
    except RecordError as err:
        item = _malformed(where, f"not a valid record ({err})", json.dumps(obj)[:4000])
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


def _records_file(path: Path, base: Path | None = None) -> list[ViewItem]:
    base = base or path.parent
    items = []
    for n, obj, error, raw in _json_lines(path):
        where = f"{path}:{n}"
        if obj is None:
            items.append(_malformed(where, error, raw))
        elif _is_rejection(obj):
            items.append(_rejection_item(obj, where, base))
        else:
            items.append(_record_item(obj, where, base))
    return items


# --------------------------------------------------------------------------------------------
# SFT (LLaVA / ShareGPT JSON)
# --------------------------------------------------------------------------------------------


def _split_prompt(text: str) -> tuple[str, dict[str, str] | None]:
    """Undo ``Sample.prompt_text``: ``question\\nOptions:\\nA. text`` -> (question, options)."""
    question, sep, listed = text.partition("\nOptions:\n")
    if not sep:
        return text, None
    options = {}
    for line in listed.splitlines():
        letter, dot, rest = line.partition(". ")
        if not dot or not letter.strip():
            return text, None
        options[letter.strip()] = rest.strip()
    return question, options or None


def _sft_file(path: Path) -> list[ViewItem]:
    from medsage.data_pipeline.writers import IMAGE_PLACEHOLDER

    data = json.loads(path.read_text(encoding="utf-8"))
    # Records beside the SFT folder carry what the LLaVA file does not: source, modality, ground truth.
    by_id: dict[str, dict] = {}
    for cand in (path.parent.parent / "records.jsonl", path.parent.parent / "kept.jsonl"):
        if cand.is_file():
            for _, obj, _, _ in _json_lines(cand):
                if obj and "id" in obj:
                    by_id[str(obj["id"])] = obj
            break
    items = []
    for n, ex in enumerate(data):
        where = f"{path}[{n}]"
        if not isinstance(ex, dict) or not isinstance(ex.get("conversations"), list):
            items.append(_malformed(where, "not a ShareGPT example (needs a 'conversations' list)", json.dumps(ex)[:4000]))
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
        item.question, item.options = _split_prompt(text.replace(IMAGE_PLACEHOLDER, ""))
        item.traces, item.check, problems = traces_from_response(gpt or "")
        item.problems += problems
        item.answer = final_answer(item.traces)
        rec = by_id.get(item.id)
        if rec:
            item.source, item.modality = rec.get("source"), rec.get("modality")
            item.question_type, item.ground_truth = rec.get("question_type"), rec.get("answer")
            item.details["record"] = "source, modality and ground truth from the records beside the SFT folder"
        else:
            item.details["ground truth"] = "not in the SFT file (the trajectory's answer is the training target)"
        items.append(item)
    return items


# --------------------------------------------------------------------------------------------
# RL rollouts
# --------------------------------------------------------------------------------------------

_VERL_KEYS = {"input", "output", "gts", "score", "step"}


def _is_rollout(obj: dict) -> bool:
    return "response" in obj and "ground_truth" in obj


def _is_verl_dump(obj: dict) -> bool:
    return _VERL_KEYS <= set(obj)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat list: the user turns hold the question
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return "\n".join(c if isinstance(c, str) else json.dumps(c) for c in users)
    return str(prompt or "")


def _rollout_verdict(item: ViewItem) -> None:
    acc = item.rewards.get("accuracy", item.rewards.get("acc"))
    if acc is not None:
        item.verdict = "correct" if acc >= 1.0 else "wrong"
    else:
        item.verdict = "scored" if item.rewards else "unscored"


def _rollout_item(obj: dict, where: str, base: Path) -> ViewItem:
    from medsage.data_pipeline.writers import IMAGE_PLACEHOLDER

    question, options = _split_prompt(_prompt_text(obj.get("prompt")).replace(IMAGE_PLACEHOLDER, ""))
    item = ViewItem(id=str(obj.get("id", where.rsplit(":", 1)[-1])), kind="rollout", where=where,
                    source=obj.get("data_source"), question_type=obj.get("question_type"),
                    modality=obj.get("modality"), question=question,
                    options=_options(obj.get("options")) or options, ground_truth=str(obj.get("ground_truth")),
                    images=[image_ref(p, base) for p in obj.get("images") or []])
    rewards = obj.get("rewards") or {}
    if not isinstance(rewards, dict):
        item.problems.append(f"'rewards' must be an object of component -> value, got {type(rewards).__name__}")
        rewards = {}
    item.rewards = {str(k): float(v) for k, v in rewards.items() if isinstance(v, (int, float))}
    if not item.images:
        item.problems.append("no image recorded for this rollout")
    item.traces, item.check, problems = traces_from_response(str(obj.get("response") or ""))
    item.problems += problems
    item.answer = final_answer(item.traces)
    if obj.get("step") is not None:
        item.details["step"] = obj["step"]
    if obj.get("spans"):
        item.details["spans"] = obj["spans"]
    _rollout_verdict(item)
    return item


def _verl_item(obj: dict, where: str) -> ViewItem:
    """A line of verl's ``rollout_data_dir`` dump: decoded prompt and response, score, components."""
    item = ViewItem(id=str(obj.get("request_id") or where.rsplit("/", 1)[-1]), kind="rollout", where=where,
                    question=str(obj.get("input") or ""), ground_truth=None if obj.get("gts") is None else str(obj["gts"]))
    skip = _VERL_KEYS | {"request_id", SPANS_DUMP_KEY}
    item.rewards = {"score": float(obj["score"])} if isinstance(obj.get("score"), (int, float)) else {}
    item.rewards |= {k: float(v) for k, v in obj.items()
                     if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
    item.problems.append("verl's rollout dump records no image (write medsage's rollout format to see them)")
    item.traces, item.check, problems = traces_from_response(str(obj.get("output") or ""))
    item.problems += problems
    item.answer = final_answer(item.traces)
    item.details["step"] = obj.get("step")
    item.details |= {k: v for k, v in obj.items() if k not in skip and k not in item.rewards}
    if obj.get(SPANS_DUMP_KEY):
        _mark_spans(item, obj[SPANS_DUMP_KEY])
    _rollout_verdict(item)
    return item


SPANS_DUMP_KEY = "medsage_spans"  # medsage.plugins.self_check.advantage.SPANS_DUMP_KEY (no verl import here)
_SPAN_TITLES = {"tau1": "τ1", "request": "request", "check": "self-check", "tau2": "τ2"}


def _mark_spans(item: ViewItem, spans: Any) -> None:
    """Put the advantage each span was trained with on the τ1 / τ2 traces and beside the check."""
    try:
        rows = [(str(name), str(text), float(adv)) for name, text, adv in spans]
    except (TypeError, ValueError):
        item.problems.append(f"'{SPANS_DUMP_KEY}' must be a list of [span, text, advantage], got {spans!r:.120}")
        return
    adv = {name: a for name, _, a in rows if name != "request"}
    item.details["spans"] = " | ".join(f"{_SPAN_TITLES.get(n, n)} {len(t)} chars, advantage {a:+.4f}"
                                       for n, t, a in rows)
    by_title = {"τ1": adv.get("tau1"), "τ2": adv.get("tau2")}
    if len(item.traces) == 1 and "tau1" in adv:  # accepted at τ1: the one trajectory is τ1
        item.traces[0].title = f"τ1 (advantage {adv['tau1']:+.4f})"
    for trace in item.traces:
        key = trace.title.split()[0]
        if len(item.traces) > 1 and by_title.get(key) is not None:
            trace.title += f" (advantage {by_title[key]:+.4f})"
    if "check" in adv:
        item.details["self-check advantage"] = f"{adv['check']:+.4f}"


def _rollout_file(path: Path) -> list[ViewItem]:
    items = []
    for n, obj, error, raw in _json_lines(path):
        where = f"{path}:{n}"
        if obj is None:
            items.append(_malformed(where, error, raw))
        elif _is_rollout(obj):
            items.append(_rollout_item(obj, where, path.parent))
        elif _is_verl_dump(obj):
            items.append(_verl_item(obj, where))
        else:
            items.append(_malformed(where, f"not a rollout line (keys {sorted(obj)[:12]})", raw))
    return items


# --------------------------------------------------------------------------------------------
# Evaluation predictions and verdicts
# --------------------------------------------------------------------------------------------

_VERDICT_KEYS = {"correct", "reason", "reference", "extracted_how"}


def _is_prediction(obj: dict) -> bool:
    return "prediction" in obj


def _is_verdict(obj: dict) -> bool:
    return _VERDICT_KEYS <= set(obj) and "prediction" not in obj


def _verdicts_for(predictions: Path) -> Path:
    return predictions.with_name(f"{predictions.stem}.verdicts.jsonl")


def _prediction_item(row: dict | None, verdict: dict | None, where: str, base: Path,
                     benchmarks: dict[tuple[str, str], Any]) -> ViewItem:
    from medsage.eval.scoring import PredictionError, resolve_item, score_item

    row = row or {}
    ref = verdict or {}
    bench = str(row.get("benchmark") or ref.get("benchmark") or "custom")
    item_id = str(row.get("id", ref.get("id", "")))
    sample = benchmarks.get((bench, item_id))
    item = ViewItem(id=item_id, kind="prediction", where=where, source=bench,
                    question_type=row.get("answer_type") or ref.get("answer_type"),
                    question=row.get("question") or (sample.question if sample else None),
                    options=_options(row.get("options")) or (sample.options if sample else None),
                    ground_truth=str(row.get("answer", ref.get("reference", ""))) or None)
    if sample is not None:
        item.modality = sample.modality
    images = row.get("images") or ([row["image"]] if row.get("image") else None)
    if images:
        item.images = [image_ref(p, base) for p in images]
    elif sample is not None:
        item.images = [image_ref(p, None) for p in sample.images]
    else:
        item.problems.append("the predictions file records no image; pass --data BENCHMARK=PATH to show it")
    if row.get("accepted_answers"):
        item.details["accepted answers"] = row["accepted_answers"]
    for key in ("model", "seconds", "group"):
        if row.get(key) is not None or ref.get(key) is not None:
            item.details[key] = row.get(key, ref.get(key))
    if row:
        item.traces, item.check, problems = traces_from_response(str(row.get("prediction") or ""))
        item.problems += problems
    else:
        item.problems.append("prediction text not available (no predictions line for this verdict)")
    if sample is not None:  # a (benchmark, id) line: the item comes from --data, as `medsage eval score` does
        item.question_type = item.question_type or sample.question_type
        item.ground_truth = item.ground_truth or sample.answer
    if verdict is None and row:
        lookup = None if sample is None else {(bench, item_id): {
            "benchmark": bench, "id": item_id, "question": sample.question, "answer": sample.answer,
            "answer_type": sample.question_type, "options": sample.options,
            "accepted_answers": sample.metadata.get("accepted_answers")}}
        try:
            verdict = score_item(resolve_item(row, where, lookup))
            item.details["verdict"] = "scored by the viewer with medsage.eval.scoring (no verdicts file beside)"
        except PredictionError as err:
            item.problems.append(f"cannot score: {err}")
    if verdict is None:
        item.verdict = "unscored"
        item.answer = final_answer(item.traces)
        return item
    item.answer = verdict.get("extracted")
    item.details["answer read by"] = verdict.get("extracted_how")
    if not verdict.get("parsed", True):
        item.verdict = "unparsed"
    else:
        item.verdict = "correct" if verdict.get("correct") else "wrong"
    item.reasons.append(f"{item.verdict}: {verdict.get('reason')}")
    if item.verdict != "correct":
        item.reason_codes.append("no answer extracted" if item.verdict == "unparsed" else "wrong answer")
    if verdict.get("answer_type") == "open":
        item.details["open answer"] = f"exact {verdict.get('exact')}, token recall {verdict.get('recall')}"
    return item


def _predictions_file(path: Path, benchmarks: dict) -> list[ViewItem]:
    verdicts_path = _verdicts_for(path)
    verdicts: dict[tuple[str, str], dict] = {}
    if verdicts_path.is_file():
        for _, obj, _, _ in _json_lines(verdicts_path):
            if obj is not None:
                verdicts[(str(obj.get("benchmark", "custom")), str(obj.get("id", "")))] = obj
    judged: dict[tuple[str, str], dict] = {}  # `medsage eval judge` writes <stem>.judge.jsonl beside
    judge_path = path.with_name(f"{path.stem}.judge.jsonl")
    if judge_path.is_file():
        for _, obj, _, _ in _json_lines(judge_path):
            if obj is not None:
                judged[(str(obj.get("benchmark") or "custom"), str(obj.get("id", "")))] = obj
    items = []
    for n, obj, error, raw in _json_lines(path):
        where = f"{path}:{n}"
        if obj is None:
            items.append(_malformed(where, error, raw))
            continue
        if not _is_prediction(obj):
            items.append(_malformed(where, "not a prediction line (needs 'prediction')", raw))
            continue
        key = (str(obj.get("benchmark", "custom")), str(obj.get("id", "")))
        item = _prediction_item(obj, verdicts.get(key), where, path.parent, benchmarks)
        if key in judged:
            j = judged[key]
            item.judge = {str(k): v for k, v in (j.get("scores") or {}).items()}
            if j.get("unparsed"):
                item.problems.append(f"the judge's reply gave no score for {j['unparsed']}")
            item.details["judge reply"] = j.get("reply")
        items.append(item)
    return items


def _verdicts_file(path: Path, benchmarks: dict) -> tuple[list[ViewItem], list[str]]:
    stem = path.name[: -len(".verdicts.jsonl")] if path.name.endswith(".verdicts.jsonl") else None
    predictions = path.with_name(f"{stem}.jsonl") if stem else None
    if predictions and predictions.is_file():
        return _predictions_file(predictions, benchmarks), [f"predictions read from {predictions}"]
    items = []
    for n, obj, error, raw in _json_lines(path):
        where = f"{path}:{n}"
        items.append(_malformed(where, error, raw) if obj is None
                     else _prediction_item(None, obj, where, path.parent, benchmarks))
    return items, [f"no predictions file beside {path}: prediction texts are not shown"]


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def load_benchmarks(specs: dict[str, str]) -> dict[tuple[str, str], Any]:
    """``--data NAME=PATH``: benchmark items by (name, id), for the images predictions files omit."""
    from medsage.eval.benchmarks.base import load_benchmark

    out = {}
    for name, path in specs.items():
        for s in load_benchmark(name, path):
            out[(name, s.id)] = s
    return out


def _file_kind(path: Path) -> str:
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ViewerInputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if isinstance(data, list) and (not data or isinstance(data[0], dict) and "conversations" in data[0]):
            return "sft"
        hint = " (dataset_info.json: pass the data file it names)" if path.name == "dataset_info.json" else ""
        raise ViewerInputError(f"{path}: a JSON file medsage view knows is an SFT data file, a list of "
                               f"{{conversations, images}} examples{hint}")
    first = _first_object(path)
    if first is None:
        raise ViewerInputError(f"{path}: no JSON object on any line; expected records, rejections, rollouts, "
                               "predictions or verdicts as JSON lines")
    if _is_prediction(first):
        return "predictions"
    if _is_verdict(first):
        return "verdicts"
    if _is_rollout(first) or _is_verl_dump(first):
        return "rollouts"
    if _is_sample(first) or _is_rejection(first):
        return "records"
    raise ViewerInputError(
        f"{path}: first line has keys {sorted(first)[:15]}, which is none of: a record (question, question_type, "
        "images), a rejection (source, key, reason), a rollout (response, ground_truth; or verl's input, output, "
        "gts, score, step), a prediction (prediction) or a verdict (correct, reason, reference, extracted_how)")


def load(path: str | Path, data: dict[str, str] | None = None) -> Loaded:
    """Read PATH, whatever of the project's outputs it is (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ViewerInputError(f"{path}: no such file or directory")
    benchmarks = load_benchmarks(data) if data else {}
    _image_info.cache_clear()  # images may have changed since an earlier load in this process
    try:
        return _load(path, benchmarks)
    except UnicodeDecodeError:
        raise ViewerInputError(f"{path}: not UTF-8 text; medsage view reads JSON and JSON-lines files "
                               "(an RL parquet file is training input, not a rollout dump)") from None


def _load(path: Path, benchmarks: dict) -> Loaded:
    if path.is_dir():
        return _load_dir(path, benchmarks)
    kind = _file_kind(path)
    if kind == "sft":
        return Loaded("SFT data file (LLaVA JSON)", path, _sft_file(path))
    if kind == "records":
        return Loaded("records / rejections (JSON lines)", path, _records_file(path))
    if kind == "rollouts":
        return Loaded("RL rollout dump", path, _rollout_file(path))
    if kind == "predictions":
        notes = [f"verdicts from {_verdicts_for(path)}"] if _verdicts_for(path).is_file() else \
            ["no verdicts file beside: scored here with medsage.eval.scoring"]
        return Loaded("evaluation predictions", path, _predictions_file(path, benchmarks), notes)
    items, notes = _verdicts_file(path, benchmarks)
    return Loaded("evaluation verdicts", path, items, notes)


def _load_dir(path: Path, benchmarks: dict) -> Loaded:
    if (path / "kept.jsonl").is_file():  # synthesis run (issue 4)
        items = _records_file(path / "kept.jsonl")
        if (path / "rejected.jsonl").is_file():
            items += _records_file(path / "rejected.jsonl")
        return Loaded("synthesis run (kept / rejected trajectories)", path, items,
                      [f"read {p.name}" for p in (path / "kept.jsonl", path / "rejected.jsonl") if p.is_file()])
    if (path / "records.jsonl").is_file() or (path / "summary.json").is_file():  # data run (issue 3)
        items: list[ViewItem] = []
        for name in ("records.jsonl", "rejected.jsonl"):
            if (path / name).is_file():
                items += _records_file(path / name)
        return Loaded("pipeline run (kept records / rejections)", path, items,
                      [f"read {n}" for n in ("records.jsonl", "rejected.jsonl") if (path / n).is_file()])
    predictions = sorted(path.glob("*/predictions.jsonl")) + sorted(path.glob("predictions.jsonl"))
    if predictions:  # evaluation run (issue 7)
        items = [it for p in predictions for it in _predictions_file(p, benchmarks)]
        return Loaded("evaluation run", path, items, [f"read {p.relative_to(path)}" for p in predictions])
    dumps = sorted(path.glob("*.jsonl"), key=lambda p: (not p.stem.isdigit(), int(p.stem) if p.stem.isdigit() else 0, p.name))
    if dumps and all(_file_kind(p) == "rollouts" for p in dumps):
        items = [it for p in dumps for it in _rollout_file(p)]
        return Loaded("RL rollout dump directory", path, items, [f"read {len(dumps)} file(s)"])
    raise ViewerInputError(
        f"{path}: a directory medsage view knows holds kept.jsonl (synthesis run), records.jsonl or summary.json "
        "(data run), <benchmark>/predictions.jsonl (evaluation run) or rollout JSON lines (<step>.jsonl)")
