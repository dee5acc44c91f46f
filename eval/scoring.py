"""Scoring predictions, item by item, with the reason for every verdict (``medsage.answers`` decides).

A predictions file is JSON lines; each line has ``prediction`` (the model's output text) and either
the item itself (``question``, ``answer``, ``answer_type`` closed/open/choice, ``options`` as a
letter -> text map for choice items) or a reference (``benchmark``, ``id``) resolved against the
loaded benchmark. ``medsage eval run`` writes both, so its files score without the data.

Metrics per benchmark (the headline is named in every summary and report):
- ``accuracy`` (headline): correct / all items; closed and choice by their verdict, open answers by
  normalised exact match; unparseable outputs count as wrong;
- ``open_recall``: mean token recall of the reference over open items (reported beside it);
- ``semantic_accuracy``: correct / all items when open answers may also be semantically consistent
  with the reference (``medsage.answers.semantic_correct``, what the accuracy reward and the
  synthesis leak check count as correct); reported beside the headline, never instead of it;
- per question type, per group (modality, organ, subject), the unparseable count with examples, and
  the self-check rate (outputs holding a ``<CHECK>`` retry; Figure 5);
- ``by_kind`` (accuracy per ``question_kind`` of the data pipeline: presence, quadrant, count, ...),
  ``loc_iou`` (mean IoU of the ``<LOC>`` box against the annotation boxes, items with one) and
  ``strict_format`` (% of outputs in the strict LVKC format): ``medsage.eval.localization``.

Score modes beside the headline (``SCORE_MODES`` states each rule; a summary carries them):
- ``closed_only_accuracy``: correct / closed and choice items, open items left out (how
  MedVLThinker, ViTAR and HuatuoGPT-Vision report VQA-RAD, SLAKE and PathVQA);
- ``medevalkit_accuracy``: every item judged by ``medsage.answers.medevalkit_verdict`` (MedEvalKit's
  substring yes/no, exact open text, most-similar-option fallback); each verdict where it disagrees
  with ours carries ``medevalkit_differs``, the known difference that explains it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from medsage.answers import medevalkit_verdict, score_output_explained, semantic_correct
from medsage.eval import layout
from medsage.eval.localization import check_truth_boxes, localization_fields, localization_summary, truth_boxes
from medsage.scaffold import split_retry
from medsage.vocab import QUESTION_TYPES

HEADLINE = "accuracy: correct / all items (closed and choice by verdict, open by normalised exact match; unparseable = wrong)"
SCORE_MODES = {
    "closed_only_accuracy": "correct / (closed + choice items); open items are left out",
    "medevalkit_accuracy": "correct / all items, each judged by MedEvalKit's rules (medsage.answers.medevalkit_verdict): "
                           "yes/no by substring, other closed and open answers by exact lower-cased text, choice by "
                           "letter, option text, else the most similar option",
    "semantic_accuracy": "correct / all items, open answers also right when semantically consistent with the reference "
                         "(medsage.answers.semantic_correct: what the accuracy reward and the leak check count)",
}
# Why a MedEvalKit verdict can differ from ours, per rule that decided it.
KNOWN_DIFFERENCES = {
    "yes/no: substring": "MedEvalKit looks for the substrings 'yes'/'no' ('not', 'know', 'none', 'eyes' count; a "
                         "negation is not read); medsage decides on whole words and reads negations",
    "closed: exact text": "MedEvalKit needs the exact lower-cased text; medsage normalises articles and punctuation",
    "open: exact text, untrimmed": "MedEvalKit compares the raw text after its answer marker (a leading space or "
                                   "an article makes it wrong); medsage normalises before the exact match",
    "choice: the answer as written": "MedEvalKit reads the text before the first '.'; medsage reads the option named",
    "choice: a letter": "MedEvalKit takes the leading letter; medsage needs exactly one option named",
    "choice: an option text": "MedEvalKit matches the whole option text; medsage finds it inside a longer answer",
    "choice: most similar option": "MedEvalKit picks the most similar option when none is named; medsage counts "
                                   "that item as unparsed and wrong",
}
ITEM_FIELDS = ("question", "answer", "answer_type")


class PredictionError(ValueError):
    """A predictions line that cannot be scored; names the file and line."""


def read_prediction_lines(path: str | Path) -> tuple[list[tuple[int, dict]], int | None]:
    """``(line number, object)`` for each line of a predictions file, and the number of a torn last line
    (an interrupted append: no newline and not JSON), or None. Line numbers are the file's own, blank
    lines counted. A bad line anywhere else is a ``PredictionError`` naming file and line."""
    path = Path(path)
    if not path.exists():
        return [], None
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    rows, torn = [], None
    for n, data in enumerate(lines, 1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PredictionError(f"{path}:{n}: not UTF-8 (byte {err.start} of the line)") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        except (json.JSONDecodeError, ValueError) as err:
            if n == len(lines) and not raw.endswith(b"\n"):
                torn = n
                continue
            raise PredictionError(f"{path}:{n}: not a JSON object ({err})") from None
        rows.append((n, obj))
    return rows, torn


def read_predictions(path: str | Path, repair: bool = False) -> list[dict]:
    """The objects of a predictions file (``read_prediction_lines``). A torn last line is dropped, and
    with ``repair`` removed from the file."""
    from medsage.io import atomic_write_jsonl

    rows, torn = read_prediction_lines(path)
    rows = [r for _, r in rows]
    if torn and repair:
        atomic_write_jsonl(path, rows)
    return rows


def _check_types(item: dict, where: str) -> None:
    """Field types a verdict relies on: a wrong type is an error naming the line, never a traceback."""
    for name in ("question", "answer"):
        if not isinstance(item.get(name), str):
            raise PredictionError(f"{where}: {name!r} must be a string, got {item.get(name)!r}")
    accepted = item.get("accepted_answers")
    if accepted is not None and not (isinstance(accepted, (list, str)) and
                                     all(isinstance(a, str) for a in ([accepted] if isinstance(accepted, str)
                                                                      else accepted))):
        raise PredictionError(f"{where}: 'accepted_answers' must be a list of strings, got {accepted!r}")
    options = item.get("options")
    if options is not None and not (isinstance(options, dict) and
                                    all(isinstance(k, str) and isinstance(v, str) for k, v in options.items())):
        raise PredictionError(f"{where}: 'options' must map letters to strings, got {options!r}")
    if (problem := check_truth_boxes(item.get("truth_boxes"), where)) is not None:
        raise PredictionError(problem)


def resolve_item(row: dict, where: str, lookup: dict[tuple[str, str], dict] | None = None) -> dict:
    """The item a prediction line is about: its own fields, or the benchmark item it names."""
    if "prediction" not in row or not isinstance(row["prediction"], (str, type(None))):
        raise PredictionError(f"{where}: needs a string field 'prediction'")
    if not isinstance(row.get("benchmark", ""), str) or not isinstance(row.get("id", ""), (str, int)) \
            or isinstance(row.get("id"), bool):
        raise PredictionError(f"{where}: 'benchmark' must be a string and 'id' a string or an integer")
    if all(k in row for k in ITEM_FIELDS):
        item = row
    elif "benchmark" in row and "id" in row:
        key = (str(row["benchmark"]), str(row["id"]))
        if lookup is None or key not in lookup:
            raise PredictionError(f"{where}: names {key[0]} item {key[1]!r}, which is not in the loaded benchmark "
                                  f"data (pass --data {key[0]}=PATH, or include question/answer/answer_type)")
        item = {**lookup[key], **{k: v for k, v in row.items() if k not in ITEM_FIELDS}}
    else:
        raise PredictionError(f"{where}: needs either the item (question, answer, answer_type) or (benchmark, id)")
    if not isinstance(item["answer_type"], str) or item["answer_type"] not in QUESTION_TYPES:
        raise PredictionError(f"{where}: answer_type {item['answer_type']!r} is not closed, open or choice")
    if item["answer_type"] == "choice" and not isinstance(item.get("options"), dict):
        raise PredictionError(f"{where}: a choice item needs 'options' as a letter -> text map")
    _check_types(item, where)
    return item


def score_item(item: dict) -> dict:
    """One verdict record: correct or not, why, what was extracted and how."""
    prediction = item.get("prediction") or ""
    refs = item.get("accepted_answers") or item["answer"]
    if item.get("unreadable_image"):  # medsage.eval.run.UNREADABLE: the model was never asked; the item counts wrong
        return {**_verdict(item, correct=False, parsed=False, reason=f"image unreadable: {item['unreadable_image']}",
                           extracted=None, how="none"), **localization_fields(prediction, item)}
    try:
        v, ex = score_output_explained(prediction, refs, item["answer_type"], item.get("options"))
    except ValueError as err:  # a malformed reference: the item is reported, not silently dropped
        return {**_verdict(item, correct=False, parsed=False, reason=f"cannot score: {err}", extracted=None,
                           how="none"), **localization_fields(prediction, item)}
    semantic = v.correct or any(semantic_correct(ex.answer, ref, item["answer_type"], item.get("options"))
                                for ref in ([refs] if isinstance(refs, str) else refs))
    out = _verdict(item, correct=v.correct, parsed=v.parsed, reason=v.reason, extracted=v.extracted, how=ex.how,
                   exact=v.exact, recall=v.recall, self_check=split_retry(prediction) is not None, semantic=semantic)
    return {**out, **medevalkit_fields(prediction, refs, item, v.correct), **localization_fields(prediction, item)}


def medevalkit_fields(prediction: str, refs, item: dict, ours: bool) -> dict:
    """The MedEvalKit-compatible verdict of one item, and the known difference when it disagrees with ours."""
    judged = [medevalkit_verdict(prediction, r, item["answer_type"], item.get("options"))
              for r in ([refs] if isinstance(refs, str) else refs)]
    correct, rule = max(judged, key=lambda j: j[0])
    fields = {"medevalkit": bool(correct), "medevalkit_rule": rule}
    if bool(correct) != bool(ours):
        fields["medevalkit_differs"] = KNOWN_DIFFERENCES[rule]
    return fields


def _verdict(item: dict, *, correct: bool, parsed: bool, reason: str, extracted, how: str, exact: bool = False,
             recall: float = 0.0, self_check: bool = False, semantic: bool = False) -> dict:
    return {
        "benchmark": item.get("benchmark", "custom"), "id": str(item.get("id", "")),
        "answer_type": item["answer_type"], "group": item.get("group"), "reference": item["answer"],
        "extracted": extracted, "extracted_how": how, "correct": bool(correct), "parsed": bool(parsed),
        "exact": bool(exact), "recall": round(float(recall), 4), "self_check": bool(self_check),
        "semantic": bool(semantic), "reason": reason,
    }


def summarize(verdicts: Iterable[dict], examples: int = 10) -> dict[str, dict]:
    """Per-benchmark summary of verdict records (see the module docstring for the metrics)."""
    by_bench: dict[str, list[dict]] = defaultdict(list)
    for v in verdicts:
        by_bench[v["benchmark"]].append(v)
    return {name: _summary(name, vs, examples) for name, vs in sorted(by_bench.items())}


def _rate(num: float, den: int) -> float | None:
    return round(100.0 * num / den, 2) if den else None


def _summary(name: str, vs: list[dict], examples: int) -> dict:
    by_type: dict[str, dict] = {}
    for t in QUESTION_TYPES:
        tv = [v for v in vs if v["answer_type"] == t]
        if not tv:
            continue
        entry = {"n": len(tv), "correct": sum(v["correct"] for v in tv), "unparsed": sum(not v["parsed"] for v in tv)}
        entry["accuracy"] = _rate(entry["correct"], len(tv))
        if t == "open":
            entry["exact"] = _rate(sum(v["exact"] for v in tv), len(tv))
            entry["recall"] = _rate(sum(v["recall"] for v in tv), len(tv))
            entry["semantic"] = _rate(sum(v.get("semantic", v["correct"]) for v in tv), len(tv))
        by_type[t] = entry
    groups: dict[str, list[dict]] = defaultdict(list)
    for v in vs:
        if v.get("group") is not None:
            groups[str(v["group"])].append(v)
    unparsed = [v for v in vs if not v["parsed"]]
    closed = [v for v in vs if v["answer_type"] in ("closed", "choice")]
    return {
        "benchmark": name, "n": len(vs), "correct": sum(v["correct"] for v in vs),
        "accuracy": _rate(sum(v["correct"] for v in vs), len(vs)), "headline": HEADLINE,
        "open_recall": by_type.get("open", {}).get("recall"),
        "semantic_accuracy": _rate(sum(v.get("semantic", v["correct"]) for v in vs), len(vs)),
        "closed_only_accuracy": _rate(sum(v["correct"] for v in closed), len(closed)),
        "medevalkit_accuracy": _rate(sum(v.get("medevalkit", False) for v in vs), len(vs)),
        "medevalkit_differs": sum("medevalkit_differs" in v for v in vs),
        "score_modes": SCORE_MODES,
        "unparsed": len(unparsed),
        "unparsed_examples": [{"id": v["id"], "reason": v["reason"]} for v in unparsed[:examples]],
        "self_check_rate": _rate(sum(v["self_check"] for v in vs), len(vs)),
        "by_type": by_type,
        "by_group": {g: {"n": len(gv), "accuracy": _rate(sum(v["correct"] for v in gv), len(gv))}
                     for g, gv in sorted(groups.items())},
        **localization_summary(vs),
    }


def score_predictions(path: str | Path, out_dir: str | Path | None = None,
                      lookup: dict[tuple[str, str], dict] | None = None,
                      ids: set[str] | None = None) -> tuple[Path, Path, dict]:
    """Score a predictions file; write ``<stem>.verdicts.jsonl`` and ``<stem>.summary.json`` atomically.

    ``ids``: the items of the run being scored (``medsage eval run``); lines for other items (left by a run with a
    larger ``limit`` or over data since replaced) stay in the file but are not scored, and the summary counts them.
    """
    from medsage.io import atomic_write_json, atomic_write_jsonl

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"predictions file {path} does not exist")
    out_dir = Path(out_dir) if out_dir else path.parent
    rows, torn = read_prediction_lines(path)
    if ids is not None:
        outside = sum(str(r.get("id")) not in ids for _, r in rows)
        rows = [(n, r) for n, r in rows if str(r.get("id")) in ids]
    verdicts, errors = [], []
    first_line: dict[tuple[str, str], tuple[int, object]] = {}
    for n, row in rows:
        try:
            verdicts.append(score_item(resolve_item(row, f"{path} line {n}", lookup)))
        except PredictionError as err:  # every bad line is named at once, and nothing is written
            errors.append(str(err))
            continue
        if "id" in row:  # an item scored twice would count twice in n (two runs appended to one file, say)
            key = (str(row.get("benchmark", "")), str(row["id"]))
            if key in first_line:
                line, prediction = first_line[key]
                same = "the same prediction" if prediction == row.get("prediction") else "a different prediction"
                errors.append(f"{path} line {n}: item id {key[1]!r}{f' of {key[0]}' if key[0] else ''} is already on "
                              f"line {line} ({same}): one prediction per item; remove the extra line")
            else:
                first_line[key] = (n, row.get("prediction"))
    if errors:
        more = f"\n... and {len(errors) - 10} more bad line(s)" if len(errors) > 10 else ""
        raise PredictionError("\n".join(errors[:10]) + more)
    summary = summarize(verdicts)
    if ids is not None and outside:
        for s in summary.values():
            s["not_in_run"] = outside  # predictions for items this run did not load: kept in the file, not scored
    if torn:  # an interrupted append: said so, in the summary and on stderr, not dropped silently
        import sys

        print(f"medsage eval score: warning: {path} line {torn} is torn (no newline, not JSON) and was not scored",
              file=sys.stderr)
        for s in summary.values():
            s["torn_last_line"] = torn
    verdicts_path = atomic_write_jsonl(layout.beside(out_dir / path.name, "verdicts.jsonl"), verdicts)
    summary_path = atomic_write_json(layout.beside(out_dir / path.name, "summary.json"), summary)
    return verdicts_path, summary_path, summary


def item_fields(sample, benchmark: str, group_by: str | None) -> dict:
    """The item fields a predictions line carries, so the file scores on its own."""
    return {"benchmark": benchmark, "id": sample.id, "question": sample.question, "answer": sample.answer,
            "answer_type": sample.question_type, "options": sample.options, "images": sample.images,
            "modality": sample.modality,
            "accepted_answers": sample.metadata.get("accepted_answers"),
            "group": sample.metadata.get(group_by) if group_by else None,
            "question_kind": sample.metadata.get("question_kind"), "truth_boxes": truth_boxes(sample)}
