"""Readers of evaluation output: predictions files and verdicts files (joined when both exist)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medsage.eval import layout as eval_layout
from medsage.eval.view.items import (ViewItem, final_answer, image_ref, json_lines, malformed, parse_options,
                                     traces_from_response)

# --------------------------------------------------------------------------------------------
# Evaluation predictions and verdicts
# --------------------------------------------------------------------------------------------

_VERDICT_KEYS = {"correct", "reason", "reference", "extracted_how"}


def is_prediction(obj: dict) -> bool:
    return "prediction" in obj


def is_verdict(obj: dict) -> bool:
    return _VERDICT_KEYS <= set(obj) and "prediction" not in obj


def verdicts_for(predictions: Path) -> Path:
    return eval_layout.beside(predictions, "verdicts.jsonl")


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
                    options=parse_options(row.get("options")) or (sample.options if sample else None),
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


def predictions_file(path: Path, benchmarks: dict) -> list[ViewItem]:
    verdicts_path = verdicts_for(path)
    verdicts: dict[tuple[str, str], dict] = {}
    if verdicts_path.is_file():
        for _, obj, _, _ in json_lines(verdicts_path):
            if obj is not None:
                verdicts[(str(obj.get("benchmark", "custom")), str(obj.get("id", "")))] = obj
    # eval.retry=answer_key's second attempts beside (medsage.eval.retry): by id, with their verdicts
    from medsage.eval.retry import RETRY, RETRY_VERDICTS

    second = _by_id(eval_layout.beside(path, RETRY))
    second_verdicts = _by_id(eval_layout.beside(path, RETRY_VERDICTS))
    judged: dict[tuple[str, str], dict] = {}  # `medsage eval judge` writes <stem>.judge.jsonl beside
    judge_path = path.with_name(f"{path.stem}.judge.jsonl")
    if judge_path.is_file():
        for _, obj, _, _ in json_lines(judge_path):
            if obj is not None:
                judged[(str(obj.get("benchmark") or "custom"), str(obj.get("id", "")))] = obj
    items = []
    for n, obj, error, raw in json_lines(path):
        where = f"{path}:{n}"
        if obj is None:
            items.append(malformed(where, error, raw))
            continue
        if not is_prediction(obj):
            items.append(malformed(where, "not a prediction line (needs 'prediction')", raw))
            continue
        key = (str(obj.get("benchmark", "custom")), str(obj.get("id", "")))
        item = _prediction_item(obj, verdicts.get(key), where, path.parent, benchmarks)
        if key[1] in second:
            _add_second_attempt(item, obj, second[key[1]], second_verdicts.get(key[1]))
        if key in judged:
            j = judged[key]
            item.judge = {str(k): v for k, v in (j.get("scores") or {}).items()}
            if j.get("unparsed"):
                item.problems.append(f"the judge's reply gave no score for {j['unparsed']}")
            item.details["judge reply"] = j.get("reply")
        items.append(item)
    return items


def _by_id(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {str(obj["id"]): obj for _, obj, _, _ in json_lines(path) if obj is not None and "id" in obj}


def _add_second_attempt(item: ViewItem, row: dict, attempt: dict, verdict: dict | None) -> None:
    """The answer-key retry's τ1 / check / τ2 in place of the lone first answer; the item's verdict stays τ1's."""
    from medsage.eval.retry import CHECK_OPEN

    item.traces, item.check, problems = traces_from_response(str(row.get("prediction") or "") + CHECK_OPEN
                                                             + str(attempt.get("retry") or ""))
    item.problems += problems
    said = "not scored" if verdict is None else ("correct" if verdict.get("correct") else "wrong")
    item.details["second attempt (answer-key trigger)"] = f"{said}: {(verdict or {}).get('reason', '')}".rstrip(": ")


def verdicts_file(path: Path, benchmarks: dict) -> tuple[list[ViewItem], list[str]]:
    stem = path.name[: -len(".verdicts.jsonl")] if path.name.endswith(".verdicts.jsonl") else None
    predictions = path.with_name(f"{stem}.jsonl") if stem else None
    if predictions and predictions.is_file():
        return predictions_file(predictions, benchmarks), [f"predictions read from {predictions}"]
    items = []
    for n, obj, error, raw in json_lines(path):
        where = f"{path}:{n}"
        items.append(malformed(where, error, raw) if obj is None
                     else _prediction_item(None, obj, where, path.parent, benchmarks))
    return items, [f"no predictions file beside {path}: prediction texts are not shown"]


