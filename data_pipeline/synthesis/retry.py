"""SFT retry rows (a departure from the paper, whose SAGE-sft has none): teach the retry format.

A small model cannot follow a self-check request it has never seen, so RL would find no check span to credit.
``rpa.retry_share`` (default 0, the paper) adds that share of the SFT rows as retry examples built from kept
trajectories of closed and choice items by the synthesizer's ``revision`` (the template synthesizer's):

    human: <image>question | gpt: wrong τ1 | human: the self-check request | gpt: <CHECK> c</CHECK> τ2

which is the token structure ``plugins/self_check/loop.py`` builds in a rollout: τ1, then the request as a user
turn through the chat template, then an assistant turn opened with ``<CHECK>`` that the policy continues with
the check and the revised trajectory (``medsage.scaffold.render_revision``). The request is the RL loop's
(``medsage.prompts.SELF_CHECK_REQUEST``) unless ``rpa.retry_request`` names another, which must then equal
``rl.request``. τ1 must not be learned: the SFT recipes set LLaMA-Factory's ``mask_history: true``, which
trains the last assistant turn only (single-turn rows are unchanged by it).

τ1 answers wrongly (the other of yes/no; another option, drawn by seed) with a conclusion that follows from its
misread evidence; τ2 is the kept, verified trajectory itself. A retry row is a record in ``retry.jsonl`` whose
``metadata["retry"]`` holds ``first`` (τ1's stages), ``check``, ``request`` and ``of`` (the kept record's id).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

from medsage.data_pipeline.synthesis.rpa import Unit

from medsage.answers import decide_yes_no, semantic_correct
from medsage.prompts import SELF_CHECK_REQUEST
from medsage.records import Sample
from medsage.scaffold import check_strict

RETRY_KEY = "retry"  # the metadata key of a retry row (writers.sft_example reads it)


@dataclass
class RetryConfig:
    """The ``rpa`` keys of the retry rows (recipes/synthesis/default.yaml)."""

    share: float = 0.0           # retry rows as a fraction of all SFT rows written; 0: none (the paper)
    request: str | None = None   # the self-check request; None: SELF_CHECK_REQUEST, the RL loop's default

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.share) < 1.0:
            raise ValueError(f"rpa.retry_share must be in [0, 1), got {self.share!r}")
        if self.request is not None and not str(self.request).strip():
            raise ValueError("rpa.retry_request is empty (null uses the RL loop's request)")

    @classmethod
    def from_rpa(cls, rpa: dict) -> RetryConfig:
        return cls(share=float(rpa.get("retry_share") or 0.0), request=rpa.get("retry_request"))

    @property
    def request_text(self) -> str:
        return str(self.request) if self.request is not None else SELF_CHECK_REQUEST


def wrong_answer(sample: Sample, rng: random.Random) -> str | None:
    """A wrong answer as a trajectory states it (``No``, ``Kidney``); None for open items, which have no other option."""
    if sample.question_type == "closed":
        side, _ = decide_yes_no(sample.answer)
        return None if side is None else ("No" if side == "yes" else "Yes")
    if sample.question_type == "choice":
        letter = rng.choice(sorted(k for k in sample.options if k != sample.answer))
        return sample.options[letter]
    return None


def retry_count(share: float, plain_rows: int) -> int:
    """Retry rows so that they are ``share`` of all rows: r / (plain + r) = share."""
    return round(share * plain_rows / (1.0 - share)) if share > 0 else 0


def build_retry_rows(kept: list[tuple[Unit, Sample]], synthesizer, cfg: RetryConfig, plain_rows: int,
                     seed: int = 0) -> list[Sample]:
    """Retry rows for a seeded draw of the closed/choice ``(unit, kept record)`` pairs: ``cfg.share`` of all SFT
    rows, beside ``plain_rows`` single-turn ones.

    Fewer when too few items are eligible (the report gives the shortfall). Raises when the share is set and the
    synthesizer cannot write a wrong τ1 and its check (only the template synthesizer can)."""
    want = retry_count(cfg.share, plain_rows)
    if want == 0:
        return []
    if not hasattr(synthesizer, "revision"):
        raise ValueError(f"rpa.retry_share={cfg.share}: the {synthesizer.name!r} synthesizer writes no retry examples "
                         "(use synthesizer=template, or rpa.retry_share=0)")
    eligible = [(u, s) for u, s in kept if s.question_type in ("closed", "choice") and s.trajectory is not None]
    rng = random.Random(f"{seed}:retry")
    rows = []
    for unit, record in rng.sample(eligible, min(want, len(eligible))):
        wrong = wrong_answer(record, rng)
        if wrong is None:
            continue
        first, check = synthesizer.revision(unit, record.trajectory, wrong)
        # τ1 must be a well-formed trajectory whose answer the accuracy rule scores wrong, as in a real retry.
        issues = check_strict(first.render(), require_region=unit.region() is not None)[1]
        if issues or semantic_correct(first.answer, record.answer, record.question_type, record.options):
            raise ValueError(f"{record.id}: the retry's first trajectory is not a wrong, well-formed one: "
                             f"{[str(i) for i in issues] or first.answer}")
        row = copy.deepcopy(record)
        row.id = f"{record.id}~retry"
        row.metadata = {**record.metadata, RETRY_KEY: {"first": first.to_dict(), "check": check,
                                                       "request": cfg.request_text, "of": record.id}}
        rows.append(row)
    return rows


def retry_report(cfg: RetryConfig, kept: list[tuple[Unit, Sample]], rows: list[Sample], plain_rows: int) -> dict:
    """The report's retry block: what was asked, what was eligible, what was written."""
    want = retry_count(cfg.share, plain_rows)
    return {"share_target": cfg.share, "rows": len(rows), "rows_wanted": want, "shortfall": want - len(rows),
            "share": round(len(rows) / (plain_rows + len(rows)), 4) if rows else 0.0,
            "eligible": sum(s.question_type in ("closed", "choice") for _, s in kept),
            "request": cfg.request_text, "note": "not in the paper: SFT retry rows teach the self-check format"}
