"""The self-check retry rollout as a verl agent loop (paper §3.3, Eq. 8-10).

    τ1 ~ π(·|V, q). If a1 is right, keep τ1. Otherwise append a self-check request, open a check
    span, and let the policy write the structured self-check (visual grounding, visual analysis,
    knowledge consistency), close it and write the revised trajectory τ2 ~ π(·|V, q, τ1).

The response handed to verl is ``τ1 | request + "<CHECK>" | check … </CHECK> | τ2``. The request
and the opening tag are context, not the policy's tokens: response_mask 0, span id "none". Every
response token gets a span id (``medsage.plugins.self_check.advantage``: none / τ1 / check / τ2), so the
advantage estimator can route credit; the split between check and τ2 is the first token whose
decoded prefix contains ``</CHECK>``. When τ1 already fills the response budget there is no room
to retry and τ1 is kept. A validation pass never retries (``manager.py``): it answers as at deployment.

Registered with verl as ``medsage_self_check``; select it with
``actor_rollout_ref.rollout.agent.default_agent_loop=medsage_self_check``. ``medsage rl`` writes an
agent-loop config file carrying the request text, the τ1/τ2 budgets and the accuracy rule of the reward recipe
(``agent_loop_config_path``): a1 != y and r_sc are decided by the rule that scores the outcome. The loop
records r_sc; α is the advantage estimator's (``advantage.ALPHA_KEY``), applied there alone.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register

from medsage.plugins.self_check.advantage import (
    ALPHA_KEY, FINAL_CORRECT_KEY, FIRST_CORRECT_KEY, LOOP_SECONDS_KEY, LOOP_VERL_SECONDS_KEY, RETRIED_KEY,
    RETRY_TOKENS_KEY, SC_REWARD_KEY, SPAN_CHECK, SPAN_NONE, SPAN_TAU1, SPAN_TAU2, SPANS_KEY, TAU1_TRUNCATED_KEY,
    TAU2_TRUNCATED_KEY, VALIDATE_KEY,
)
from medsage.plugins.rewards import reward_input_from_row
from medsage.plugins.rewards.accuracy import AccuracyReward
from medsage.plugins.rewards.self_check import self_check_success
from medsage.prompts import SELF_CHECK_REQUEST
from medsage.scaffold import CHECK_TAG, split_retry

AGENT_NAME = "medsage_self_check"
CHECK_OPEN, CHECK_CLOSE = f"<{CHECK_TAG}>", f"</{CHECK_TAG}>"
DEFAULT_REQUEST = SELF_CHECK_REQUEST  # one text for RL and the SFT retry rows (medsage.prompts)


_RULES: dict[str, AccuracyReward] = {}


def accuracy_rule(params) -> AccuracyReward:
    """The ``AccuracyReward`` of the agent-loop file's ``accuracy`` node, built once per event loop: verl builds
    a loop per rollout, and an LLM judge's client should be one per worker (its connections belong to the
    worker's event loop)."""
    import asyncio
    import json

    from omegaconf import DictConfig, OmegaConf

    params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else dict(params or {})
    try:
        running = id(asyncio.get_running_loop())
    except RuntimeError:
        running = None
    key = json.dumps([params, running], sort_keys=True, default=str)
    if key not in _RULES:
        _RULES[key] = AccuracyReward(**params)
    return _RULES[key]


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the vision placeholder tokens this tokenizer has (none for a text-only model)."""
    unk = tokenizer.unk_token_id
    ids = [tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS]
    return [i for i in ids if i is not None and i != unk]


def _extend_spans(spans: list[int], merge_result, labels: list[int]) -> list[int]:
    """Mirror a Continuous Token merge on the span ids (verl does the same for the response mask)."""
    if merge_result.removed_prefix_token_count:
        spans = spans[: -merge_result.removed_prefix_token_count]
    spans = spans + [SPAN_NONE] * len(merge_result.inserted_token_ids)
    if merge_result.kind == "assistant":
        if len(labels) != merge_result.appended_token_count:
            raise ValueError(f"{len(labels)} span labels for {merge_result.appended_token_count} assistant tokens")
        return spans + labels
    return spans + [SPAN_NONE] * merge_result.appended_token_count


@register(AGENT_NAME)
class SelfCheckAgentLoop(AgentLoopBase):
    def __init__(self, *args, request: str = DEFAULT_REQUEST, retry: bool = True,
                 tau1_max_tokens: int | None = None, tau2_max_tokens: int | None = None,
                 accuracy: dict[str, Any] | None = None, **kwargs):
        if CHECK_OPEN in request or CHECK_CLOSE in request:
            raise ValueError(f"the self-check request must not contain {CHECK_OPEN} or {CHECK_CLOSE}: "
                             "the loop opens the span itself and the reward splits on the first one")
        if "alpha" in kwargs:  # verl's base class would take it silently and nothing would apply it
            raise ValueError("the self-check agent loop records r_sc; α is the advantage estimator's: set "
                             f"algorithm.{ALPHA_KEY} (medsage rl writes it from rl.alpha), not the loop's alpha")
        super().__init__(*args, **kwargs)
        self.request = request
        self.retry = bool(retry)
        # The run's one accuracy rule (the reward recipe's, which medsage rl writes into the agent-loop
        # file): it decides the trigger (a1 != y) and r_sc exactly as the outcome reward scores them.
        self.accuracy = accuracy_rule(accuracy)
        self.response_length = self.rollout_config.response_length
        # τ1 and (check + τ2) each get a generation budget; the retry never gets more than what τ1 and the
        # request left of verl's response length (medsage rl sizes it: rl.response_budget per_turn | whole)
        self.tau1_max_tokens = int(tau1_max_tokens or self.response_length)
        self.tau2_max_tokens = int(tau2_max_tokens or self.response_length)
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None}
        # The policy must never write a vision token: verl would read it as an image placeholder when it
        # builds mRoPE positions (get_rope_index) and fail. logit_bias is vLLM's sampling parameter.
        self.banned = {int(i): -100.0 for i in vision_token_ids(self.tokenizer)}

    async def _timed(self, kind: str, awaitable):
        """Await ``awaitable``, adding its wall time to ``self._waits[kind]`` (server | verl)."""
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self._waits[kind] += time.perf_counter() - started

    async def _generate(self, prompt_ids, sampling_params, mm: dict[str, Any], request_id: str):
        if self.banned:
            sampling_params = {**sampling_params, "logit_bias": {**sampling_params.get("logit_bias", {}), **self.banned}}
        return await self._timed("server", self._serve(prompt_ids, sampling_params, mm, request_id))

    async def _serve(self, prompt_ids, sampling_params, mm: dict[str, Any], request_id: str):
        return await self.server_manager.generate(
            request_id=request_id, prompt_ids=prompt_ids, sampling_params=sampling_params,
            image_data=mm.get("images"), video_data=mm.get("videos"), audio_data=mm.get("audios"),
            mm_processor_kwargs=self._get_mm_processor_kwargs(mm.get("audios")),
        )

    async def _correct(self, text: str, item) -> bool:
        """The accuracy rule on one trajectory; an LLM judge's call is a served model's time, like generation."""
        if self.accuracy.judge is None:
            return self.accuracy.correct(text, item)
        return await self._timed("server", self.accuracy.correct_async(text, item))

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _check_length(self, ids: list[int]) -> int:
        """Tokens up to and including the one that completes ``</CHECK>`` (all of them if never closed).

        One decode per token and a search of the last few characters only: linear in the length. The
        tag is ASCII, so a token that ends inside a multi-byte character (decoded alone as U+FFFD)
        cannot hide or fake it; this is the first token whose decoded prefix contains the tag.
        """
        tail = ""
        for k, piece in enumerate(self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)):
            tail = (tail + piece)[-(len(piece) + len(CHECK_CLOSE)):]
            if CHECK_CLOSE in tail:
                return k + 1
        return len(ids)

    def _truncated(self, ids: list[int], limit: int) -> bool:
        """The generation used its whole budget without ending its turn."""
        return len(ids) >= limit and (not ids or ids[-1] not in self.stop_ids)

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> AgentLoopOutput:
        # Time outside this loop's own code: the server's generations, and verl's agent-loop helpers
        # (image loading, chat template, token merges: what verl's single-turn loop calls too), whose
        # awaits also span other rollouts' work on this event loop. What is left is medsage's own code.
        started, self._waits = time.perf_counter(), {"server": 0.0, "verl": 0.0}
        messages = list(kwargs["raw_prompt"])
        item = reward_input_from_row("", kwargs["reward_model"]["ground_truth"], kwargs.get("extra_info"))
        mm = await self._timed("verl", self.process_multi_modal_info(messages))
        self._assert_mm_supported(bool(mm))
        prompt_ids = await self._timed("verl", self.ct_build_initial_tokens(
            messages, images=mm.get("images"), videos=mm.get("videos"), audios=mm.get("audios")))
        request_id = uuid4().hex

        # τ1
        tau1_limit = min(int(sampling_params.get("max_tokens", self.tau1_max_tokens)), self.tau1_max_tokens,
                         self.response_length)
        out1 = await self._generate(prompt_ids, {**sampling_params, "max_tokens": tau1_limit}, mm, request_id)
        tau1_truncated = self._truncated(out1.token_ids, tau1_limit)
        merged, mask, logprobs = await self._timed("verl", self.ct_merge_assistant_token(
            prompt_ids, out1.token_ids, [], [] if out1.log_probs else None,
            assistant_logprobs=out1.log_probs or None))
        spans = _extend_spans([], merged, [SPAN_TAU1] * len(out1.token_ids))
        tau1 = self._decode(out1.token_ids)
        first_correct = await self._correct(tau1, item)

        retried, sc_reward, tau2_truncated, retry_tokens = False, 0.0, False, 0
        final_correct = first_correct
        # A validation pass answers once, as at deployment: the trigger is the answer key, an oracle
        # (verl's validation flag reaches the loop as a row column: manager.py).
        validate = bool(kwargs.get(VALIDATE_KEY, False))
        if self.retry and not validate and not first_correct:
            previous = messages + [{"role": "assistant", "content": tau1}]
            updated = previous + [{"role": "user", "content": self.request}]
            ctx, ctx_mask, ctx_logprobs = await self._timed("verl", self.ct_merge_context_msg(
                previous, updated, merged.token_ids, mask, logprobs))
            # Open the check span for the policy: context tokens, like the request.
            opener = self.tokenizer.encode(CHECK_OPEN, add_special_tokens=False)
            room = min(self.tau2_max_tokens, self.response_length - len(ctx_mask) - len(opener))
            if room > 0:  # otherwise τ1 already fills the budget: keep it, as if accepted
                retried = True
                spans = _extend_spans(spans, ctx, []) + [SPAN_NONE] * len(opener)
                runtime = ctx.token_ids + opener
                mask = ctx_mask + [0] * len(opener)
                logprobs = ctx_logprobs + [0.0] * len(opener) if ctx_logprobs is not None else None
                out2 = await self._generate(runtime, {**sampling_params, "max_tokens": room}, mm, request_id)
                n_check = self._check_length(out2.token_ids)
                tau2_truncated, retry_tokens = self._truncated(out2.token_ids, room), len(out2.token_ids)
                merged, mask, logprobs = await self._timed("verl", self.ct_merge_assistant_token(
                    runtime, out2.token_ids, mask, logprobs if out2.log_probs else None,
                    assistant_logprobs=out2.log_probs or None))
                labels = [SPAN_CHECK] * n_check + [SPAN_TAU2] * (len(out2.token_ids) - n_check)
                spans = _extend_spans(spans, merged, labels)
                parts = split_retry(CHECK_OPEN + self._decode(out2.token_ids))
                revised = parts[2] if parts is not None else ""
                final_correct = await self._correct(revised, item)
                sc_reward = self_check_success(first_correct, final_correct)

        full = merged.token_ids
        response_ids = full[len(full) - len(mask):]
        prompt_ids = full[: len(full) - len(mask)]
        n = self.response_length
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=response_ids[:n],
            response_mask=mask[:n],
            response_logprobs=logprobs[:n] if logprobs else None,
            multi_modal_data=mm,
            mm_processor_kwargs=self._get_mm_processor_kwargs(mm.get("audios")),
            num_turns=4 if retried else 2,
            metrics={},
            extra_fields={
                SPANS_KEY: spans[:n],
                RETRIED_KEY: retried,
                SC_REWARD_KEY: sc_reward,
                FIRST_CORRECT_KEY: first_correct,
                FINAL_CORRECT_KEY: final_correct,
                TAU1_TRUNCATED_KEY: tau1_truncated,
                TAU2_TRUNCATED_KEY: tau2_truncated,
                RETRY_TOKENS_KEY: retry_tokens,
                # seconds in this loop's own code, and in verl's helpers it awaits: bench_rl_step.py
                LOOP_SECONDS_KEY: time.perf_counter() - started - self._waits["server"] - self._waits["verl"],
                LOOP_VERL_SECONDS_KEY: self._waits["verl"],
                "turn_scores": [],
                "tool_rewards": [],
            },
        )
