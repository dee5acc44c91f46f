"""The second attempt at evaluation: the self-check retry with the answer-key trigger, as in training.

``eval.retry=answer_key``: every item whose first answer (τ1, the predictions file) is wrong by the scoring rule
gets the conversation the RL loop builds (``plugins/self_check/loop.py``): τ1 as the model's turn, the self-check
request as the user's, then a reply opened with ``<CHECK>`` that the model continues with the check, ``</CHECK>``
and a revised trajectory τ2. τ2 alone is scored, by the same rule; a reply that never closes the check is wrong.
The trigger is the answer key, an oracle: these numbers say how well the model corrects itself when told it is
wrong (SCoRe's metrics), never what it scores deployed. The headline accuracy stays τ1's.

    <benchmark>/predictions.retry.jsonl           one second attempt per retried item (appended batch by batch)
    <benchmark>/predictions.retry_verdicts.jsonl  its verdicts: τ2 correct or not, and why

The summary's ``self_correction`` block (SCoRe, Kumar et al. 2024): Acc@t1 (first attempt), Acc@t2 (after the
retry; an item not retried keeps its first answer), Δ(i→c) (wrong first, right second) and Δ(c→i) (right first,
wrong second: zero by construction under the answer-key trigger, reported so the table reads the same with another
trigger), all in % of the items.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from medsage.eval import layout
from medsage.eval.prompting import ChatRequest
from medsage.scaffold import CHECK_TAG, split_retry

TRIGGERS = ("none", "answer_key")  # eval.retry
CHECK_OPEN = f"<{CHECK_TAG}>"
RETRY = "retry.jsonl"
RETRY_VERDICTS = "retry_verdicts.jsonl"


def retry_request(first: ChatRequest, tau1: str, request: str) -> ChatRequest:
    """The first request, then τ1 as the model's turn, the self-check request, and the reply opened with ``<CHECK>``
    (the training loop's context tokens: the policy writes from the check on)."""
    return replace(first, turns=(("assistant", tau1), ("user", request)), reply_prefix=CHECK_OPEN)


def revised(retry_text: str) -> str | None:
    """τ2 of a second attempt (the text after ``</CHECK>``), or None when the check is never closed."""
    parts = split_retry(CHECK_OPEN + retry_text)
    return parts[2] if parts is not None else None


def generate_retries(first_verdicts: list[dict], rows: dict[str, dict], requests: dict[str, ChatRequest], backend,
                     predictions: Path, request: str, batch_size: int, benchmark: str) -> int:
    """Append a second attempt for every item whose first verdict is wrong and that has none yet; return how many
    were generated. ``rows``: the predictions lines by id; ``requests``: each item's first request by id."""
    from medsage.eval.run import UNREADABLE, append_batches
    from medsage.eval.scoring import read_predictions

    path = layout.beside(predictions, RETRY)
    done = {str(r.get("id")) for r in read_predictions(path, repair=True)} if path.exists() else set()
    wrong = [v["id"] for v in first_verdicts if not v["correct"] and UNREADABLE not in rows[v["id"]]]
    todo = [i for i in wrong if i not in done]

    def lines_of(ids: list[str]) -> list[dict]:
        outs = backend.generate([retry_request(requests[i], rows[i].get("prediction") or "", request) for i in ids])
        if len(outs) != len(ids):  # as for first answers (medsage.eval.run._generate): none dropped unsaid
            raise RuntimeError(f"backend {backend.name} returned {len(outs)} outputs for {len(ids)} requests")
        return [{"id": i, "retry": out} for i, out in zip(ids, outs)]

    append_batches(path, todo, batch_size, lines_of, desc=f"{benchmark} retry", total=len(wrong))
    return len(todo)


def score_retries(predictions: Path, first_verdicts: list[dict], rows: dict[str, dict]) -> dict:
    """Score the second attempts beside ``predictions``; write their verdicts; return the ``self_correction`` block."""
    from medsage.eval.scoring import read_predictions, score_item
    from medsage.io import atomic_write_jsonl

    path = layout.beside(predictions, RETRY)
    second = {str(r["id"]): r["retry"] for r in (read_predictions(path) if path.exists() else []) if "id" in r}
    verdicts, counts = [], {}  # kind (None: all items) -> [n, right at t1, right at t2, i->c, c->i]
    for v in first_verdicts:
        row = rows[v["id"]]
        first = last = bool(v["correct"])
        if v["id"] in second:
            tau2 = revised(second[v["id"]])
            if tau2 is None:
                verdict = {"id": v["id"], "correct": False, "reason": f"the retry never closed </{CHECK_TAG}>"}
            else:
                scored = score_item({**row, "prediction": tau2})
                verdict = {"id": v["id"], "correct": scored["correct"], "reason": scored["reason"],
                           "extracted": scored["extracted"]}
            verdicts.append({**verdict, "first_correct": first, "question_kind": row.get("question_kind")})
            last = bool(verdict["correct"])
        for kind in {None, row.get("question_kind")}:
            c = counts.setdefault(kind, [0, 0, 0, 0, 0])
            for k, add in enumerate((1, first, last, not first and last, first and not last)):
                c[k] += int(add)
    atomic_write_jsonl(layout.beside(predictions, RETRY_VERDICTS), verdicts)
    missing = sum(1 for v in first_verdicts if not v["correct"] and v["id"] not in second)
    return {"trigger": "answer_key", "retried": len(verdicts), "wrong_not_retried": missing,
            **_rates(counts.pop(None, [0] * 5)),
            "by_kind": {k: _rates(c) for k, c in sorted(counts.items(), key=lambda kc: str(kc[0])) if k is not None}}


def _rates(c: list[int]) -> dict:
    n = c[0]
    pct = (lambda k: round(100.0 * k / n, 2)) if n else (lambda k: None)
    return {"n": n, "acc_t1": pct(c[1]), "acc_t2": pct(c[2]), "delta_i_to_c": pct(c[3]), "delta_c_to_i": pct(c[4])}
