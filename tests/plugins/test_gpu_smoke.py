"""GPU smoke: one R-GRPO step of the tiny model through `medsage rl` -> verl -> vLLM.

Runs only where an accelerator and the RL environment (verl + vllm importable by this interpreter,
or cluster.envs.rl via MEDSAGE_RL_ENV) are present; skipped with the reason otherwise. It checks that
verl loads medsage's plugin in its own processes (agent loop and estimator resolved by name), that
the step finishes, and that the self-check metrics were logged.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

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


def _write_rl_parquet(samples, path):
    """A few rows in verl's RL layout (what the data pipeline writes for SAGE-rl)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for s in samples:
        rows.append({
            "data_source": "sage_rl_smoke",
            "prompt": [{"role": "user", "content": "<image>" + s.question}],
            "images": [{"image": str(p)} for p in s.images],
            "reward_model": {"style": "rule", "ground_truth": s.answer},
            "extra_info": {"question_type": s.question_type, "id": s.id,
                           "options": {k: v for k, v in (s.options or {}).items()} or None},
        })
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.gpu
@pytest.mark.slow
def test_one_rgrpo_step_on_gpu(tmp_path, tiny_model_dir, demo_samples):
    data = tmp_path / "rl.parquet"
    _write_rl_parquet(demo_samples, data)
    env_rl = os.environ.get("MEDSAGE_RL_ENV")
    extra = ["trainer.total_training_steps=1", "trainer.val_before_train=false",
             "actor_rollout_ref.model.use_remove_padding=false", "actor_rollout_ref.rollout.enforce_eager=true"]
    cmd = [sys.executable, "-m", "medsage.launch.cli", "rl", "model=tiny", f"model.path={tiny_model_dir}",
           "cluster=a100_1x", f"train_files={data}", f"output_dir={tmp_path / 'run'}",
           "rl.epochs=1", "rl.rollout_n=2", "rl.max_prompt_length=512", "rl.max_response_length=256",
           "rl.micro_batch_per_device=2", "rl.grad_accum=1", "rl.gpu_memory_utilization=0.3",
           "rl.save_freq=-1", "rl.test_freq=-1",
           "extra_overrides=[" + ",".join(f"'{o}'" for o in extra) + "]"]
    if env_rl:
        cmd.append(f"cluster.envs.rl={env_rl}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "medsage/self_check_rate" in log, log[-6000:]
