"""Accuracy reward (paper A.4): the final answer against the ground truth, by question type.

The answer is read and judged by ``medsage.answers``: closed yes/no on whole words, a choice naming
one option, and an open answer correct when it matches exactly or is semantically consistent with
the reference (``semantic_correct``: token recall over finding words with synonyms, negation and numbers
within a tolerance; ``medsage.answers.SemanticRule``). The synthesis leak check uses the same
function, so a kept trajectory's answer is one this reward scores 1. An answer naming two options,
or none, scores 0.

    medsage rl reward=accuracy reward.params.threshold=0.9 reward.params.metric=recall
    medsage rl reward=accuracy reward.params.open_match=exact     # exact match only
    medsage rl reward=accuracy reward.params.open_match=llm +reward.params.judge='{base_url: ..., model: ...}'

``open_match=llm`` asks an OpenAI-compatible model (``medsage.chat``, the one client) whether an
open answer the rule does not accept still says what the reference says. It is for the RL run only
(the outcome reward, the self-check trigger and r_sc, which share one rule: ``recipe_accuracy``): the
leak check and evaluation keep the rule, so say so when you report with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from medsage.answers import (DEFAULT_RULE, SemanticRule, decide_yes_no, extract_answer, judged_as_open,
                             score_output, semantic_correct)
from medsage.plugins.rewards import RewardInput, final_trajectory

JUDGE_PROMPT = ("A medical question has the reference answer below. Does the candidate answer say the same "
                "thing (synonyms, more detail or a number within a reasonable range are fine; a different "
                "finding, side, negation or a list of alternatives is not)? Reply with yes or no only.\n"
                "Question: {question}\nReference answer: {reference}\nCandidate answer: {candidate}")


class LLMAnswerJudge:
    """An OpenAI-compatible model's yes/no on "does this open answer say what the reference says"."""

    def __init__(self, client: dict[str, Any]):
        from medsage.chat import ChatClient, client_config

        self.client = ChatClient(client_config({"temperature": 0.0, "max_tokens": 8, **dict(client)},
                                               "reward.params.judge"))

    async def ask(self, candidate: str, reference: str, question: str | None) -> bool:
        """The judge's verdict, awaited on the caller's event loop (the self-check agent loop's)."""
        from medsage.chat import Message

        prompt = JUDGE_PROMPT.format(question=question or "", reference=reference, candidate=candidate)
        reply = await self.client.chat([Message("user", prompt)])
        return decide_yes_no(reply.text)[0] == "yes"

    def __call__(self, candidate: str, reference: str, question: str | None) -> bool:
        return self.client.run(lambda _: self.ask(candidate, reference, question))


def answer_correct(text: str, item: RewardInput, rule: SemanticRule | None = DEFAULT_RULE) -> bool:
    """Whether ``text`` (one trajectory) answers ``item`` correctly; ``rule=None``: exact match only."""
    if rule is None:
        return score_output(text, item.ground_truth, item.question_type, item.options).correct
    return semantic_correct(extract_answer(text).answer, item.ground_truth, item.question_type, item.options, rule)


class AccuracyReward:
    """``reward=accuracy`` (or a composite component); the parameters are ``SemanticRule``'s, plus
    ``judge`` (a ``medsage.chat`` client node) for ``open_match=llm``.

    ``correct`` is THE accuracy decision of an RL run: the outcome reward, the self-check retry's
    trigger (a1 != y) and r_sc (Eq. 10) all call it with the reward recipe's parameters
    (``recipe_accuracy``)."""

    def __init__(self, open_match: Literal["semantic", "exact", "llm"] = "semantic",
                 judge: dict[str, Any] | None = None, **rule):
        if open_match not in ("semantic", "exact", "llm"):
            raise ValueError(f"open_match must be semantic, exact or llm, got {open_match!r}")
        if (open_match == "llm") != bool(judge):
            raise ValueError("open_match=llm needs judge={base_url, model, ...}, and judge is only for llm")
        rule = {k: tuple(tuple(g) for g in v) if k.endswith("synonyms") else v for k, v in rule.items()}
        self.rule = SemanticRule(**rule) if open_match != "exact" else None
        self.judge = LLMAnswerJudge(judge) if judge else None

    def _by_rule(self, text: str, item: RewardInput) -> tuple[bool, str | None]:
        """(the rule accepts ``text``, the answer to ask the judge about when it does not and a judge is set)."""
        if answer_correct(text, item, self.rule):
            return True, None
        answer = extract_answer(text).answer
        ask = self.judge is not None and answer and judged_as_open(item.ground_truth, item.question_type)
        return False, answer if ask else None

    def correct(self, text: str, item: RewardInput) -> bool:
        """Whether one trajectory ``text`` answers ``item`` correctly (the rule, then the judge if any)."""
        ok, ask = self._by_rule(text, item)
        return ok or (ask is not None and self.judge(ask, item.ground_truth, item.question))

    async def correct_async(self, text: str, item: RewardInput) -> bool:
        """``correct`` for a caller inside an event loop: the judge is awaited, not run to completion."""
        ok, ask = self._by_rule(text, item)
        return ok or (ask is not None and await self.judge.ask(ask, item.ground_truth, item.question))

    def __call__(self, item: RewardInput) -> float:
        return 1.0 if self.correct(final_trajectory(item.response), item) else 0.0


def recipe_accuracy(reward: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``AccuracyReward``'s parameters in a reward recipe (``reward.name``, ``reward.params``): the
    composite's ``components.accuracy``, the accuracy reward's own parameters, else none (the default
    rule: a reward without an accuracy term, e.g. format alone or a third-party reward, names no rule)."""
    from medsage.plugins.rewards import recipe_component

    return recipe_component(reward, dict(params or {}), "accuracy")
