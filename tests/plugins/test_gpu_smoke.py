"""GPU smoke: two R-GRPO steps of the tiny model through `medsage rl` -> verl -> vLLM (same recipe as CPU).

Runs only where an accelerator and the RL environment (verl + vllm importable by this interpreter,
or cluster.envs.rl via MEDSAGE_RL_ENV) are present; skipped with the reason otherwise. It checks that
verl loads medsage's plugin in its own processes (agent loop and estimator resolved by name), that
the step finishes, and that the self-check metrics were logged.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def _skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA accelerator on this machine (verl's vLLM rollout and FSDP training need one)"
    if not os.environ.get("MEDSAGE_RL_ENV") and importlib.util.find_spec("vllm") is None:
        return "vllm is not installed here and MEDSAGE_RL_ENV (a verl+vllm virtualenv) is not set"
    return None


_REASON = _skip_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


@pytest.mark.gpu
@pytest.mark.slow
def test_two_rgrpo_steps_on_gpu(tmp_path, tiny_model_dir):
    # The CPU training test's recipe (tests/helpers/rl_run.py) on a GPU cluster recipe: vLLM rollout.
    from rl_run import run_rl, write_rl_parquet

    from medsage.plugins.engines.verl import console_step_metrics

    env_rl = os.environ.get("MEDSAGE_RL_ENV")
    out, rc, log = run_rl(tmp_path, tiny_model_dir, write_rl_parquet(tmp_path), "rl.gpu_memory_utilization=0.3",
                          "rl.save_freq=2", *([f"cluster.envs.rl={env_rl}"] if env_rl else []), cluster="a100_1x",
                          extra=["actor_rollout_ref.model.use_remove_padding=false",
                                 "actor_rollout_ref.rollout.enforce_eager=true"])
    assert rc == 0, log[-6000:]
    steps = console_step_metrics(log)
    assert sorted(steps) == [1, 2] and "medsage/self_check_rate" in steps[2], log[-6000:]
    assert steps[2]["training/rollout_probs_diff_max"] < 1e-2  # vLLM samples in bf16
    assert (out / "final_model" / "config.json").exists()
