"""The self-check agent loop against a generation server backed by the tiny model's real ``generate``.

The server adapter below is the test's stand-in for verl's LLM server client (vLLM needs a GPU): it
runs ``Qwen2_5_VLForConditionalGeneration.generate`` greedily on the prompt ids the loop sends. A
random model never writes ``</CHECK>`` or stops early by itself, so a test may ask the adapter to
force given tokens at given steps of one call (a logits processor); every other token is the
model's own.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl")

from medsage.plugins.self_check.advantage import (  # noqa: E402
    RETRIED_KEY, SC_REWARD_KEY, SPAN_CHECK, SPAN_NONE, SPAN_TAU1, SPAN_TAU2, SPANS_KEY,
)
from medsage.scaffold import split_retry  # noqa: E402

RESPONSE_LENGTH = 400


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    return (AutoTokenizer.from_pretrained(tiny_model_dir), AutoProcessor.from_pretrained(tiny_model_dir),
            Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval())


class TinyServer:
    """``generate(request_id, *, prompt_ids, sampling_params, ...) -> TokenOutput`` over HF generate."""

    def __init__(self, model, forced: dict[int, dict[int, int]] | None = None, processor=None):
        self.model, self.forced, self.processor, self.calls = model, forced or {}, processor, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **_):
        from transformers import LogitsProcessor, LogitsProcessorList
        from verl.workers.rollout.replica import TokenOutput

        call, start = len(self.calls), len(prompt_ids)
        self.calls.append({"prompt_ids": list(prompt_ids), "sampling_params": dict(sampling_params),
                           "images": image_data})
        vision = {}
        if image_data:  # what vLLM does with image_data: run the processor, feed pixels and grid
            feats = self.processor.image_processor(images=image_data, return_tensors="pt")
            vision = {"pixel_values": feats["pixel_values"], "image_grid_thw": feats["image_grid_thw"]}
        forced = self.forced.get(call, {})

        class Force(LogitsProcessor):
            def __call__(self, input_ids, scores):
                step = input_ids.shape[1] - start
                if step in forced:
                    scores = torch.full_like(scores, -float("inf"))
                    scores[:, forced[step]] = 0.0
                return scores

        ids = torch.tensor([prompt_ids])
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                      max_new_tokens=int(sampling_params.get("max_tokens", 16)),
                                      logits_processor=LogitsProcessorList([Force()]), **vision)
        return TokenOutput(token_ids=out[0, start:].tolist())


def run_loop(tiny, server, ground_truth, question_type, max_tokens=6, content=None, row=None, **loop_kwargs):
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from medsage.plugins.self_check.loop import SelfCheckAgentLoop

    tokenizer, processor, _ = tiny
    cfg = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 256, "response_length": RESPONSE_LENGTH}},
                            "data": {"apply_chat_template_kwargs": {}, "mm_processor_kwargs": {}}})

    async def go():
        loop = SelfCheckAgentLoop(trainer_config=DictConfigWrap(cfg), server_manager=server, tokenizer=tokenizer,
                                  processor=processor, dataset_cls=RLHFDataset, data_config=DictConfigWrap(cfg.data),
                                  hf_model_type="qwen2_5_vl", **loop_kwargs)
        return await loop.run({"temperature": 0, "max_tokens": max_tokens},
                              raw_prompt=[{"role": "user", "content": content or "Is there a lesion in the liver?"}],
                              reward_model={"ground_truth": ground_truth},
                              extra_info={"question_type": question_type, "options": None, "id": "t0"}, **(row or {}))

    return asyncio.run(go())


def check_layout(out):
    spans = out.extra_fields[SPANS_KEY]
    assert len(spans) == len(out.response_ids) == len(out.response_mask)        # spans cover the response
    assert [int(s != SPAN_NONE) for s in spans] == list(out.response_mask)       # masks match
    return spans


def tokens(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def greedy_text(tiny, server_prompt_ids, max_tokens):
    tokenizer, _, model = tiny
    out = asyncio.run(TinyServer(model).generate("x", prompt_ids=server_prompt_ids,
                                                 sampling_params={"max_tokens": max_tokens}))
    return tokenizer.decode(out.token_ids, skip_special_tokens=True)


def test_first_answer_right_keeps_tau1(tiny):
    tokenizer, _, model = tiny
    probe = TinyServer(model)
    run_loop(tiny, probe, "no", "closed")
    tau1 = greedy_text(tiny, probe.calls[0]["prompt_ids"], 6)
    # An open question whose reference is exactly what the model says (a short text answer).
    server = TinyServer(model)
    out = run_loop(tiny, server, tau1.strip(), "open")
    assert len(server.calls) == 1
    assert out.extra_fields[RETRIED_KEY] is False and out.extra_fields["medsage_first_correct"] is True
    spans = check_layout(out)
    assert spans == [SPAN_TAU1] * len(out.response_ids)
    assert out.extra_fields[SC_REWARD_KEY] == 0.0


def _retry_script(tokenizer, free_check=5, free_tau2=2):
    close = tokens(tokenizer, "</CHECK>")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    forced = {free_check + i: t for i, t in enumerate(close)}
    forced[free_check + len(close) + free_tau2] = end
    return {1: forced}


def test_wrong_first_answer_retries_with_exact_spans(tiny):
    tokenizer, _, model = tiny
    server = TinyServer(model, _retry_script(tokenizer))
    out = run_loop(tiny, server, "yes", "closed")
    assert out.extra_fields["medsage_first_correct"] is False and out.extra_fields[RETRIED_KEY] is True
    assert len(server.calls) == 2
    spans = check_layout(out)

    # The second call continues the first prompt + τ1 + the request context + "<CHECK>".
    first_prompt, second_prompt = server.calls[0]["prompt_ids"], server.calls[1]["prompt_ids"]
    n_tau1 = spans.count(SPAN_TAU1)
    assert second_prompt[: len(first_prompt)] == first_prompt
    assert second_prompt[len(first_prompt):len(first_prompt) + n_tau1] == out.response_ids[:n_tau1]
    assert tokenizer.decode(second_prompt).endswith("<|im_start|>assistant\n<CHECK>")
    assert server.calls[1]["sampling_params"]["max_tokens"] == RESPONSE_LENGTH - (len(second_prompt) - len(first_prompt))

    # Spans in order τ1, context, check (closed by </CHECK>), τ2 — contiguous runs.
    runs = [s for i, s in enumerate(spans) if i == 0 or spans[i - 1] != s]
    assert runs == [SPAN_TAU1, SPAN_NONE, SPAN_CHECK, SPAN_TAU2]
    ids = out.response_ids
    check_text = tokenizer.decode([t for t, s in zip(ids, spans) if s == SPAN_CHECK])
    tau2_text = tokenizer.decode([t for t, s in zip(ids, spans) if s == SPAN_TAU2], skip_special_tokens=True)
    assert check_text.endswith("</CHECK>") and check_text.count("</CHECK>") == 1
    whole = tokenizer.decode(ids, skip_special_tokens=True)
    assert split_retry(whole)[2] == tau2_text  # what the reward will read as τ2
    assert out.extra_fields[SC_REWARD_KEY] == 0.0


def test_successful_correction_earns_the_self_check_reward(tiny):
    tokenizer, _, model = tiny
    probe = TinyServer(model, _retry_script(tokenizer))
    first = run_loop(tiny, probe, "yes", "closed")
    spans = first.extra_fields[SPANS_KEY]
    tau2 = tokenizer.decode([t for t, s in zip(first.response_ids, spans) if s == SPAN_TAU2],
                            skip_special_tokens=True).strip()
    assert tau2 and "<" not in tau2
    # Same greedy rollout; now the reference is what τ2 says (and τ1 said something else).
    out = run_loop(tiny, TinyServer(model, _retry_script(tokenizer)), tau2, "open")
    assert out.extra_fields[RETRIED_KEY] is True
    assert out.extra_fields[SC_REWARD_KEY] == 1.0  # r_sc; α is the estimator's (test_advantage.py)
    assert out.response_ids == first.response_ids


def test_no_room_to_retry_keeps_tau1(tiny):
    tokenizer, _, model = tiny
    server = TinyServer(model)
    out = run_loop(tiny, server, "yes", "closed", max_tokens=RESPONSE_LENGTH - 20)
    assert len(server.calls) == 1 and out.extra_fields[RETRIED_KEY] is False
    assert check_layout(out) == [SPAN_TAU1] * len(out.response_ids)


def test_request_must_not_hold_the_check_tag(tiny):
    from medsage.plugins.self_check.loop import SelfCheckAgentLoop

    with pytest.raises(ValueError, match="must not contain"):
        SelfCheckAgentLoop.__init__(object.__new__(SelfCheckAgentLoop), None, request="write <CHECK> here")


def test_image_prompt_retry_keeps_the_image(tiny, tmp_path):
    """verl's RL rows carry the image in the chat (RLHFDataset's {"type": "image", "image": path})."""
    from PIL import Image

    tokenizer, processor, model = tiny
    Image.new("RGB", (112, 112), (40, 40, 40)).save(tmp_path / "ct.png")
    content = [{"type": "image", "image": str(tmp_path / "ct.png")}, {"type": "text", "text": "Is there a lesion?"}]
    server = TinyServer(model, _retry_script(tokenizer), processor=processor)
    out = run_loop(tiny, server, "yes", "closed", content=content)
    assert out.extra_fields[RETRIED_KEY] is True and len(server.calls) == 2
    check_layout(out)
    first, second = server.calls
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert first["prompt_ids"].count(image_pad) > 0
    assert second["prompt_ids"][: len(first["prompt_ids"])] == first["prompt_ids"]  # same image tokens, once
    assert second["prompt_ids"].count(image_pad) == first["prompt_ids"].count(image_pad)
    assert len(second["images"]) == 1 and second["images"][0].size == first["images"][0].size
    assert list(out.multi_modal_data) == ["images"]


def test_check_split_is_the_first_prefix_holding_the_tag(tiny):
    # The split decodes each token once (linear); it must agree with the definition: the shortest
    # prefix whose decoded text contains </CHECK>, also next to multi-byte characters.
    from types import SimpleNamespace

    from medsage.plugins.self_check.loop import CHECK_CLOSE, SelfCheckAgentLoop

    tokenizer = tiny[0]
    loop = SimpleNamespace(tokenizer=tokenizer)
    for text in ("the region was misread é</CHECK> <ANSWER>yes</ANSWER>", "ü日本</CHECK>語 done", "no tag at all ü",
                 "</CHECK>first", "a </CHECK> b </CHECK> c"):
        ids = tokens(tokenizer, text)
        expected = next((k for k in range(1, len(ids) + 1)
                         if CHECK_CLOSE in tokenizer.decode(ids[:k], skip_special_tokens=True)), len(ids))
        assert SelfCheckAgentLoop._check_length(loop, ids) == expected, text


def test_loop_time_counts_neither_the_server_nor_verls_helpers(tiny, monkeypatch):
    """bench_rl_step.py's medsage share: the loop's own time excludes generation and verl's helpers."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase

    from medsage.plugins.self_check.advantage import LOOP_SECONDS_KEY, LOOP_VERL_SECONDS_KEY

    tokenizer, _, model = tiny
    helper = AgentLoopBase.ct_merge_context_msg

    async def slow_helper(self, *args, **kwargs):  # a slow verl helper (e.g. a long chat template)
        await asyncio.sleep(0.3)
        return await helper(self, *args, **kwargs)

    class SlowServer(TinyServer):
        async def generate(self, *args, **kwargs):
            await asyncio.sleep(0.3)
            return await super().generate(*args, **kwargs)

    monkeypatch.setattr(AgentLoopBase, "ct_merge_context_msg", slow_helper)
    out = run_loop(tiny, SlowServer(model, _retry_script(tokenizer)), "yes", "closed")
    assert out.extra_fields[RETRIED_KEY] is True
    assert out.extra_fields[LOOP_VERL_SECONDS_KEY] >= 0.3
    assert 0 < out.extra_fields[LOOP_SECONDS_KEY] < 0.3  # neither 2 × 0.3 s of server nor 0.3 s of helper


# --- one accuracy rule: the trigger (a1 != y) and r_sc judge as the outcome reward does --------------------------


def _say(tokenizer, *texts):
    """Force each call's whole output: call k writes ``texts[k]`` and ends its turn."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return {k: dict(enumerate(tokens(tokenizer, t) + [end])) for k, t in enumerate(texts)}


TAU1 = "<ANSWER>nodule in the left lung</ANSWER>"  # semantically the reference, not exactly it
REFERENCE = "left lung nodule"


def test_trigger_follows_the_exact_match_rule(tiny):
    from medsage.plugins.rewards import RewardInput
    from medsage.plugins.rewards.accuracy import AccuracyReward

    tokenizer, _, model = tiny
    assert AccuracyReward(open_match="exact")(RewardInput(TAU1, REFERENCE, "open")) == 0.0  # the reward: wrong
    default = TinyServer(model, _say(tokenizer, TAU1))
    out = run_loop(tiny, default, REFERENCE, "open", max_tokens=40)
    assert out.extra_fields[RETRIED_KEY] is False and len(default.calls) == 1  # the default rule: right
    exact = TinyServer(model, _say(tokenizer, TAU1, "misread</CHECK>" + TAU1))
    out = run_loop(tiny, exact, REFERENCE, "open", max_tokens=40, accuracy={"open_match": "exact"})
    assert out.extra_fields["medsage_first_correct"] is False and out.extra_fields[RETRIED_KEY] is True
    assert len(exact.calls) == 2


def test_self_check_reward_follows_the_exact_match_rule(tiny):
    # τ1 wrong, τ2 semantically right but not exactly: r_sc is paid only when the reward's rule says τ2 is right
    tokenizer, _, model = tiny
    script = ("<ANSWER>liver</ANSWER>", "misread</CHECK>" + TAU1)
    semantic = run_loop(tiny, TinyServer(model, _say(tokenizer, *script)), REFERENCE, "open", max_tokens=40)
    exact = run_loop(tiny, TinyServer(model, _say(tokenizer, *script)), REFERENCE, "open", max_tokens=40,
                     accuracy={"open_match": "exact"})
    assert semantic.extra_fields[RETRIED_KEY] and exact.extra_fields[RETRIED_KEY]
    assert semantic.extra_fields[SC_REWARD_KEY] == 1.0 and exact.extra_fields[SC_REWARD_KEY] == 0.0


def test_trigger_asks_the_llm_judge_of_the_reward(tiny, monkeypatch):
    """An open τ1 the rule rejects but the reward's LLM judge accepts is kept, not retried (the judge is a
    scripted loopback server: a real judge model cannot be run here)."""
    from synth_server import LoopbackServer, completion, sequence, user_text

    tokenizer, _, model = tiny
    monkeypatch.setenv("MEDSAGE_TEST_JUDGE_KEY", "")
    tau1 = "<ANSWER>pulmonary mass</ANSWER>"
    rule_only = run_loop(tiny, TinyServer(model, _say(tokenizer, tau1, "x</CHECK>" + tau1)), REFERENCE, "open",
                         max_tokens=40)
    assert rule_only.extra_fields[RETRIED_KEY] is True  # the rule alone: wrong
    with LoopbackServer(sequence((200, completion("Yes"), 0.0))) as judge:
        server = TinyServer(model, _say(tokenizer, tau1))
        accuracy = {"open_match": "llm", "judge": {"base_url": judge.base_url, "model": "judge",
                                                   "api_key_env": "MEDSAGE_TEST_JUDGE_KEY"}}
        out = run_loop(tiny, server, REFERENCE, "open", max_tokens=40, accuracy=accuracy)
        asked = [user_text(b) for b in judge.requests]
    assert out.extra_fields[RETRIED_KEY] is False and out.extra_fields["medsage_first_correct"] is True
    assert len(server.calls) == 1 and len(asked) == 1
    assert "Candidate answer: pulmonary mass" in asked[0] and f"Reference answer: {REFERENCE}" in asked[0]


def test_validation_answers_once_without_the_answer_key(tiny):
    """A validation row (verl's validate flag, copied into the row by medsage's agent-loop worker) is answered
    as at deployment: a wrong τ1 is not retried, since the trigger would be the answer key."""
    from verl import DataProto

    from medsage.plugins.self_check.advantage import FINAL_CORRECT_KEY, VALIDATE_KEY
    from medsage.plugins.self_check.manager import mark_validation

    tokenizer, _, model = tiny
    batch = DataProto.from_dict(non_tensors={"raw_prompt": np.array([[], []], dtype=object)},
                                meta_info={"validate": True})
    mark_validation(batch)
    row = {k: v[0] for k, v in batch.non_tensor_batch.items() if k != "raw_prompt"}
    assert row == {VALIDATE_KEY: True}
    training = DataProto.from_dict(non_tensors={"raw_prompt": np.array([[]], dtype=object)}, meta_info={})
    mark_validation(training)
    assert VALIDATE_KEY not in training.non_tensor_batch

    server = TinyServer(model, _retry_script(tokenizer))
    out = run_loop(tiny, server, "yes", "closed", row=row)
    assert len(server.calls) == 1 and out.extra_fields[RETRIED_KEY] is False
    assert out.extra_fields["medsage_first_correct"] is False and out.extra_fields[FINAL_CORRECT_KEY] is False
    assert check_layout(out) == [SPAN_TAU1] * len(out.response_ids)
    trained = run_loop(tiny, TinyServer(model, _retry_script(tokenizer)), "yes", "closed")
    assert trained.extra_fields[RETRIED_KEY] is True  # the same row in training is retried
