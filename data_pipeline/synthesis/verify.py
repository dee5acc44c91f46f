"""Consistency verification (A.3.5) with regenerate-up-to-k, rejection reasons kept.

Each draft passes, in order: the scaffold's strict check (a box RoI must leave a region in <LOC>),
the leak checks, then — when a verifier model is configured — its verdict on cross-stage
contradiction, unsupported steps, wrong knowledge and contradiction with the answer. A failed draft
is regenerated up to k times; after that the unit is rejected, and every attempt's trajectory and
reasons are kept (they are the negatives for the trajectory scorer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medsage.chat import FATAL, CallError, ChatClient, Image, Message
from medsage.data_pipeline.synthesis.leaks import check_stages, reference_answer
from medsage.data_pipeline.synthesis.prompts import StagePrompt
from medsage.data_pipeline.synthesis.rpa import Draft, SynthesisError, Unit
from medsage.scaffold import check_strict

PROBLEM_KINDS = ("cross_stage_contradiction", "unsupported_step", "wrong_knowledge", "answer_contradiction")


@dataclass(frozen=True)
class Reason:
    """Why an attempt failed: a stable ``code`` (it is counted) and the detail."""

    code: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


@dataclass(frozen=True)
class Verdict:
    """The verifier's judgement: ``ok`` and the problems it named."""

    ok: bool
    problems: tuple[Reason, ...]
    raw: str = ""


def parse_verdict(text: str) -> Verdict:
    """Read the verifier's JSON; an unreadable or self-contradictory verdict is a failed check."""
    from medsage.data_pipeline.synthesis.synthesizers.llm import parse_json_reply

    try:
        obj = parse_json_reply(text, "verifier", ("consistent",))
    except SynthesisError as err:
        return Verdict(False, (Reason("verifier_unparseable", err.detail),), text)
    problems = obj.get("problems") or []
    if not isinstance(obj["consistent"], bool) or not isinstance(problems, list):
        problem = Reason("verifier_unparseable", "'consistent' must be true/false, 'problems' a list")
        return Verdict(False, (problem,), text)
    named = []
    for p in problems:
        kind = p.get("kind") if isinstance(p, dict) else None
        detail = str(p.get("detail", "")) if isinstance(p, dict) else str(p)
        named.append(Reason(kind if kind in PROBLEM_KINDS else "other_problem", detail))
    if obj["consistent"] and named:  # "consistent" with problems listed: trust the problems
        return Verdict(False, tuple(named), text)
    if not obj["consistent"] and not named:
        named = [Reason("other_problem", "judged inconsistent without a reason")]
    return Verdict(obj["consistent"], tuple(named), text)


class LLMVerifier:
    """A verifier model behind the same kind of client (A.3.5 uses Qwen2.5-VL-72B)."""

    def __init__(self, client: ChatClient, prompt: StagePrompt, model: str | None = None, with_image: bool = True):
        self.client, self.prompt, self.model, self.with_image = client, prompt, model, with_image

    async def judge(self, unit: Unit, text: str, attempt: int) -> Verdict:
        system, user = self.prompt.render(question=unit.sample.prompt_text(),
                                          answer=reference_answer(unit.sample), trajectory=text)
        # A vision-language verifier also checks the stages against the image; a text-only one cannot.
        images = (Image.from_path(unit.sample.images[0]),) if self.with_image else ()
        try:
            reply = await self.client.chat([Message("system", system), Message("user", user, images)],
                                           salt=f"verify-attempt{attempt}", model=self.model)
        except CallError as err:
            if err.reason in FATAL:
                raise
            return Verdict(False, (Reason(f"verifier_call_failed:{err.reason}", err.detail),))
        return parse_verdict(reply.text)


@dataclass
class Attempt:
    """One try at a unit: the rendered trajectory (when there was one) and why it failed."""

    reasons: list[Reason]
    trajectory: str | None = None


@dataclass
class Outcome:
    unit: Unit
    kept: Draft | None = None
    attempts: list[Attempt] = field(default_factory=list)
    duplicate: bool = False  # verified, but the same trajectory as one already kept

    @property
    def reason(self) -> str | None:
        """The rejection code: the first reason of the last attempt, without its detail."""
        if self.kept is not None or not self.attempts:
            return None
        return self.attempts[-1].reasons[0].code


def check_draft(unit: Unit, draft: Draft) -> tuple[str | None, list[Reason]]:
    """The rendered text and every rule it breaks (scaffold first, then leaks)."""
    try:
        text = draft.trajectory.render()
    except ValueError as err:
        return None, [Reason("scaffold_empty_stage", str(err))]
    _, issues = check_strict(text, require_region=unit.region() is not None)
    reasons = [Reason(f"scaffold_{i.code}", i.message) for i in issues]
    leaks = check_stages(draft.loc_prose, draft.trajectory.know or "", draft.trajectory.answer, unit.sample)
    return text, reasons + [Reason(leak.code, leak.detail) for leak in leaks]


async def synthesize_verified(unit: Unit, synthesizer, verifier: LLMVerifier | None, k: int) -> Outcome:
    """Draft, check and verify one unit; regenerate up to ``k`` times before rejecting it."""
    if k < 0:
        raise ValueError(f"verify.k must be >= 0, got {k}")
    outcome = Outcome(unit)
    for attempt in range(k + 1):
        try:
            draft = await synthesizer.draft(unit, attempt)
        except SynthesisError as err:
            outcome.attempts.append(Attempt([Reason(err.reason, err.detail)]))
            continue
        except OSError as err:  # the record's image is missing or unreadable: retrying cannot help
            outcome.attempts.append(Attempt([Reason("image_unreadable", f"{type(err).__name__}: {err}")]))
            break
        text, reasons = check_draft(unit, draft)
        if not reasons and verifier is not None:
            verdict = await verifier.judge(unit, text, attempt)
            reasons = [] if verdict.ok else list(verdict.problems)
        if not reasons:
            outcome.kept = draft
            return outcome
        outcome.attempts.append(Attempt(reasons, text))
    return outcome
