"""Test-only agent loop: medsage's self-check loop whose retry always closes the check span.

A random tiny model never writes ``</CHECK>`` by itself, so the check and τ2 spans (and the
self-check reward) never appear in a short CPU run. This subclass lets the model write a few check
tokens of its own, then forces ``</CHECK><ANSWER>a</ANSWER>`` and the end of turn, one token at a time
through the real rollout server with vLLM's ``logit_bias`` sampling parameter. ``a`` is the reference
answer for prompts of even length and a wrong one otherwise, so the outcome reward and the
self-check reward vary within a batch. Only the tests use it (a hand-made rollout would not go
through verl's server, weight sync or trainer).
"""

from __future__ import annotations

from verl.workers.rollout.replica import TokenOutput

from medsage.plugins.self_check.loop import CHECK_CLOSE, CHECK_OPEN, SelfCheckAgentLoop

FREE_CHECK_TOKENS = 3


class ForcedCheckLoop(SelfCheckAgentLoop):
    async def run(self, sampling_params, **kwargs):
        self._reference = str(kwargs["reward_model"]["ground_truth"])
        return await super().run(sampling_params, **kwargs)

    async def _generate(self, prompt_ids, sampling_params, mm, request_id):
        opener = self.tokenizer.encode(CHECK_OPEN, add_special_tokens=False)
        if list(prompt_ids[-len(opener):]) != opener:  # τ1: the model's own
            return await super()._generate(prompt_ids, sampling_params, mm, request_id)
        free = await super()._generate(prompt_ids, {**sampling_params, "max_tokens": FREE_CHECK_TOKENS}, mm, request_id)
        keep = [i for i, t in enumerate(free.token_ids) if t not in self.stop_ids]
        ids = [free.token_ids[i] for i in keep]
        logprobs = [free.log_probs[i] for i in keep]
        answer = self._reference if len(prompt_ids) % 2 == 0 else "zebra"
        forced = self.tokenizer.encode(f"{CHECK_CLOSE}<ANSWER>{answer}</ANSWER>", add_special_tokens=False)
        for token in forced + [self.tokenizer.eos_token_id]:
            out = await super()._generate(list(prompt_ids) + ids, {**sampling_params, "max_tokens": 1,
                                                                   "logit_bias": {token: 100.0}}, mm, request_id)
            if out.token_ids[:1] != [token]:
                raise AssertionError(f"logit_bias did not force token {token}: got {out.token_ids}")
            ids.append(token)
            logprobs.append(out.log_probs[0])
        return TokenOutput(token_ids=ids, log_probs=logprobs, stop_reason="completed")
