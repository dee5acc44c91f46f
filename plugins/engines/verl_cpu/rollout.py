"""A generation server over ``transformers.generate`` behind verl's rollout interfaces (rollout ``hf_cpu``).

verl's rollouts are vLLM, SGLang and TensorRT-LLM, all GPU-only. Its agent loops talk to a rollout
*server* (a Ray actor answering ``generate(request_id, prompt_ids, sampling_params, image_data, ...)``
with a ``TokenOutput``), started by a ``RolloutReplica`` that verl looks up by name in
``RolloutReplicaRegistry``; each training worker holds a ``BaseRollout`` adapter that receives the
trained weights through verl's weight-sync path (``ActorRolloutRefWorker.update_weights`` ->
``rollout.update_weights(named tensors)``). The three classes below implement those interfaces:

- ``HFGenerationServer``: the server actor; one Hugging Face model, requests served one at a time,
  images placed with the 3-D mRoPE positions the trainer uses; log-probs of the sampled tokens from
  the processed distribution (temperature, top-k/top-p and ``logit_bias``, the vLLM sampling parameter
  medsage's agent loop uses to ban vision tokens), as vLLM's ``processed_logprobs`` (verl's default);
- ``HFReplica``: starts one server per trainer rank, on that rank's node;
- ``HFServerAdapter``: in the trainer rank; gathers the full tensors verl yields and loads them into
  its server, so every rollout after the first weight sync samples from the policy being trained.
"""

from __future__ import annotations

import asyncio
import os

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

from medsage.plugins.engines.verl_cpu_env import ROLLOUT_NAME  # noqa: E402


def server_name(replica_rank: int) -> str:
    return f"medsage_hf_server_{replica_rank}"


def _model_config(model_config):
    from omegaconf import DictConfig
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig

    if isinstance(model_config, DictConfig):
        return omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
    return model_config


class _Bias:
    """Add per-token biases to the scores (vLLM's ``logit_bias``)."""

    def __init__(self, bias: dict):
        self.ids = torch.tensor([int(k) for k in bias], dtype=torch.long)
        self.values = torch.tensor([float(v) for v in bias.values()])

    def __call__(self, input_ids, scores):
        scores[:, self.ids] += self.values.to(scores.dtype)
        return scores


class HFGenerationServer:
    def __init__(self, config, model_config, replica_rank: int = 0):
        from transformers import AutoProcessor
        from verl.utils.model import get_hf_auto_model_class

        self.config = config
        # vLLM's rollout seeds its engine with the same number (verl's vllm_async_server), so a run samples the same
        # way on CPU whatever else this process drew; requests still reach the server in the order they arrive
        torch.manual_seed(replica_rank + int(config.seed))
        mc = _model_config(model_config)
        self.model = get_hf_auto_model_class(mc.hf_config).from_pretrained(
            mc.local_path, torch_dtype=torch.float32, attn_implementation="sdpa").eval()
        self.processor = AutoProcessor.from_pretrained(mc.local_path)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        gen = self.model.generation_config
        self.eos = gen.eos_token_id if gen.eos_token_id is not None else self.tokenizer.eos_token_id
        self.pad = gen.pad_token_id if gen.pad_token_id is not None else self.tokenizer.pad_token_id
        self.lock = asyncio.Lock()
        self.global_steps = None
        self.weight_syncs = 0

    # -- generation ------------------------------------------------------------------------------

    def _max_tokens(self, sampling_params: dict, prompt_len: int) -> int:
        budget = self.config.prompt_length + self.config.response_length - prompt_len
        wanted = sampling_params.get("max_tokens", sampling_params.get("max_new_tokens", self.config.response_length))
        return max(1, min(int(wanted), budget))

    @torch.no_grad()
    def _generate(self, prompt_ids, sampling_params: dict, image_data) -> TokenOutput:
        from transformers import LogitsProcessorList

        ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
        vision = {}
        if image_data:
            feats = self.processor.image_processor(images=image_data, return_tensors="pt")
            # mm_token_type_ids: without it transformers (>= 5.3) gives the image tokens 1-D positions instead
            # of Qwen2.5-VL's 3-D mRoPE ones, which verl's trainer and LLaMA-Factory use: the rollout would
            # sample from another distribution than the one trained (rollout_probs_diff_max 0.05-0.12).
            types = torch.tensor(self.processor.create_mm_token_type_ids([list(prompt_ids)]), dtype=torch.long)
            vision = {"pixel_values": feats["pixel_values"], "image_grid_thw": feats["image_grid_thw"],
                      "mm_token_type_ids": types}
        temperature = float(sampling_params.get("temperature", 1.0))
        sample = temperature > 0
        top_k = int(sampling_params.get("top_k", -1))
        processors = LogitsProcessorList([_Bias(sampling_params["logit_bias"])] if sampling_params.get("logit_bias") else [])
        out = self.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), **vision,
            max_new_tokens=self._max_tokens(sampling_params, len(prompt_ids)), do_sample=sample,
            temperature=temperature if sample else None, top_p=float(sampling_params.get("top_p", 1.0)) if sample else None,
            top_k=top_k if sample and top_k > 0 else None, logits_processor=processors,
            eos_token_id=self.eos, pad_token_id=self.pad, output_scores=True, return_dict_in_generate=True,
        )
        tokens = out.sequences[0, ids.shape[1]:]
        # scores: the processed logits each token was drawn from (vLLM's processed_logprobs)
        scores = torch.stack(out.scores, dim=1)[0].float()
        logprobs = torch.log_softmax(scores, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        eos = {self.eos} if isinstance(self.eos, int) else set(self.eos or [])
        keep = len(tokens)
        if self.pad is not None and self.pad not in eos:  # generate pads nothing for one sequence; be safe
            keep = next((i for i, t in enumerate(tokens.tolist()) if t == self.pad), keep)
        return TokenOutput(token_ids=tokens[:keep].tolist(), log_probs=logprobs[:keep].tolist(),
                           stop_reason="completed", extra_fields={"global_steps": self.global_steps})

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None,
                       audio_data=None, mm_processor_kwargs=None, priority=0, **_):
        if video_data or audio_data:
            raise ValueError(f"rollout {ROLLOUT_NAME} serves text and images only")
        async with self.lock:
            return await asyncio.to_thread(self._generate, prompt_ids, dict(sampling_params), image_data)

    # -- weight sync -----------------------------------------------------------------------------

    async def load_weights(self, state: dict, global_steps=None) -> int:
        async with self.lock:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if unexpected or len(state) < len(self.model.state_dict()) - len(missing) or missing:
                raise ValueError(f"weight sync did not match the rollout model: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
            self.global_steps = global_steps
            self.weight_syncs += 1
            return self.weight_syncs

    async def stats(self) -> dict:
        return {"weight_syncs": self.weight_syncs, "global_steps": self.global_steps}

    # -- what verl's replica and checkpoint manager call; a CPU model has no cache to free --------

    async def wake_up(self): ...
    async def sleep(self): ...
    async def clear_kv_cache(self): ...
    async def release_kv_cache(self): ...
    async def resume_kv_cache(self): ...
    async def resume_generation(self): ...
    async def start_profile(self, **kwargs): ...
    async def stop_profile(self): ...

    async def abort_all_requests(self, reject_request: bool = False):
        return {"aborted_count": 0, "request_ids": []}


class HFReplica(RolloutReplica):
    async def launch_servers(self):
        if self.world_size != 1:
            raise ValueError(f"rollout {ROLLOUT_NAME} runs one model per rank: set rollout.tensor_model_parallel_size=1 "
                             f"(got a world of {self.world_size})")
        node_id = await self.workers[0].__ray_call__.remote(lambda w: ray.get_runtime_context().get_node_id())
        server = ray.remote(HFGenerationServer).options(
            name=server_name(self.replica_rank), num_cpus=0, max_concurrency=self.max_concurrency,
            scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        # not awaited: verl creates the agent-loop workers and the router only after this returns, and each of
        # those processes, like the server's, spends seconds of a core importing verl; started now, they import
        # while the server does. Ray queues the first call (verl's sleep_replicas, before training) until the
        # model is loaded, and a server that failed to load fails that call.
        self.servers = [server]
        self._server_handle = server
        self._server_address = server_name(self.replica_rank)  # a Ray actor, not an HTTP endpoint


class HFServerAdapter(BaseRollout):
    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", 0))
        self.replica_rank = rank if replica_rank == -1 else replica_rank
        self._server = None

    def _handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def update_weights(self, weights, wire_format: str = "named_tensors", global_steps=None, **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"rollout {ROLLOUT_NAME} takes full named tensors, not {wire_format!r}")
        # every rank iterates (FSDP gathers each full tensor collectively); each sends to its own server
        state = {name: t.detach().to("cpu", copy=True) for name, t in weights}
        await self._handle().load_weights.remote(state, global_steps)

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None
