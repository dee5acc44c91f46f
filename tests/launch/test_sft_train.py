"""Real LLaMA-Factory SFT of the tiny Qwen2.5-VL on CPU: loss, manifest, export, finished-run detection, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from medsage.launch.sft import SftError, run_sft

pytestmark = pytest.mark.slow


def _generate(model_dir, image, prompt):
    """Load the exported folder exactly as the RL and eval stages do, and answer one question."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[Image.open(image).convert("RGB")], text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:]


def test_sft_trains_records_exports_and_detects_a_finished_run(tiny_sft_overrides, demo_samples, tmp_path,
                                                              sft_schema_cache, capsys):
    result = run_sft(tiny_sft_overrides(), stream=False)
    assert "effective batch  2 per step x 1 accumulation x 1 CPU process = 2" in capsys.readouterr().out
    run_dir = result.run_dir
    assert result.status == "finished" and run_dir == tmp_path / "runs" / "run_001"

    # 12 samples, batch 2, 3 epochs: 18 logged steps, and the model learnt something.
    losses = result.losses
    assert len(losses) == 18
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6
    assert losses[-1] < losses[0]

    # The manifest: recipe, generated YAML, versions, git, data hash, times, final loss.
    manifest = json.loads((run_dir / "medsage_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["final_loss"] == losses[-1]
    assert manifest["recipe"]["sft"]["name"] == "tiny_cpu" and manifest["recipe"]["model"]["name"] == "tiny"
    import yaml

    generated = yaml.safe_load((run_dir / manifest["llamafactory_yaml"]).read_text())
    assert generated == manifest["llamafactory_args"] and generated["output_dir"] == str(run_dir)
    assert manifest["versions"]["llamafactory"] == "0.9.5" and manifest["versions"]["transformers"]
    assert "revision" in manifest["git"] and (manifest["git"]["revision"] or manifest["git"]["note"])
    assert len(manifest["data_hash"]["sha256"]) == 64 and manifest["data_hash"]["images"] == 12
    assert manifest["started_at"] <= manifest["ended_at"]
    assert manifest["attempts"][0]["exit_code"] == 0 and manifest["attempts"][0]["mode"] == "cpu"
    checkpoints = sorted(run_dir.glob("checkpoint-*"))
    assert checkpoints and all(json.loads((c / "medsage_manifest.json").read_text())["status"] == "finished"
                               for c in checkpoints)

    # Export: a standard HF folder that loads with AutoProcessor + Qwen2_5_VLForConditionalGeneration.
    assert (run_dir / "chat_template.jinja").is_file() or "chat_template" in (run_dir / "tokenizer_config.json").read_text()
    new_tokens = _generate(run_dir, demo_samples[0].images[0], demo_samples[0].prompt_text())
    assert 0 < len(new_tokens) <= 12

    # Rerunning the same command does nothing and says so.
    before = (run_dir / "medsage_manifest.json").read_bytes()
    started = time.time()
    again = run_sft(tiny_sft_overrides())
    assert again.status == "already_finished" and again.run_dir == run_dir
    assert "already finished" in capsys.readouterr().out
    assert time.time() - started < 10
    assert (run_dir / "medsage_manifest.json").read_bytes() == before

    # --fresh goes to a new folder; the finished run is untouched.
    fresh = run_sft(tiny_sft_overrides(), fresh=True, dry_run=True, quiet=True)
    assert fresh.run_dir == tmp_path / "runs" / "run_002"
    assert (run_dir / "medsage_manifest.json").read_bytes() == before


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def test_killed_run_resumes_to_the_uninterrupted_runs_weights(tiny_sft_overrides, tmp_path, sft_schema_cache):
    # 12 steps (2 epochs of 6), a checkpoint every 3: the kill lands mid-epoch, so the resume also skips batches.
    settings = ("sft.save_strategy=steps", "sft.save_steps=3", "sft.save_total_limit=null", "sft.num_train_epochs=2")
    overrides = tiny_sft_overrides(*settings)
    run_dir = tmp_path / "runs" / "run_001"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # A real `medsage sft` in its own process group, SIGKILLed (no cleanup at all) after the first checkpoint.
    proc = subprocess.Popen([sys.executable, "-m", "medsage.launch.cli", "sft", "--quiet", *overrides], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not any(run_dir.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "training ended before it could be interrupted"
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (run_dir / "train_results.json").exists()  # it really was cut short
    manifest = json.loads((run_dir / "medsage_manifest.json").read_text())
    assert manifest["status"] == "running"  # nobody got to record the end

    # Resuming with a different setting would mix two runs: refused, nothing launched.
    with pytest.raises(SftError, match=r"(?s)cannot resume .*learning_rate: 0.001 -> 0.01"):
        run_sft([*overrides, "sft.learning_rate=0.01"], quiet=True)

    # The same command resumes from the newest complete checkpoint and finishes the 12 steps.
    result = run_sft(overrides, stream=False)
    assert result.status == "finished" and result.run_dir == run_dir
    attempts = result.manifest["attempts"]
    assert len(attempts) == 2 and attempts[1]["resumed_from"]
    resumed_step = int(attempts[1]["resumed_from"].rsplit("-", 1)[1])
    assert resumed_step in (3, 6, 9)
    state = json.loads((run_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    assert len(result.losses) == 12  # the resumed history carries the steps before the kill
    log = (run_dir / "train.log").read_text()
    assert log.count("===== ") == 2 and f"Resuming training from checkpoint with epoch {resumed_step // 6} and global step {resumed_step}" in log

    # The same command never interrupted, in another folder: the resumed run is the same training. Before the
    # resume the losses are the killed attempt's own; after it they are what the checkpoint's weights give.
    straight = run_sft(tiny_sft_overrides(*settings, out_dir=tmp_path / "straight"), stream=False)
    assert len(straight.losses) == 12
    after = [(a, b) for a, b in zip(result.losses[resumed_step:], straight.losses[resumed_step:])]
    assert all(abs(a - b) <= 1e-3 * max(1.0, abs(b)) for a, b in after), after
    resumed, uninterrupted = _weights(run_dir), _weights(straight.run_dir)
    assert resumed.keys() == uninterrupted.keys()
    worst = max((resumed[k].float() - uninterrupted[k].float()).abs().max().item() for k in resumed)
    assert worst <= 1e-4, f"final weights differ from the uninterrupted run's by up to {worst}"


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("shutil").which("nvidia-smi"), reason="needs an NVIDIA GPU (torchrun launch path)")
def test_gpu_launch_trains_through_torchrun(tiny_sft_overrides, sft_schema_cache):
    # The real GPU path: FORCE_TORCHRUN=1, NPROC_PER_NODE=1, bf16 on (no DeepSpeed: not part of the test env).
    result = run_sft(tiny_sft_overrides("cluster=a100_1x", "sft.bf16=true", "sft.deepspeed=null"), stream=False)
    assert result.status == "finished" and result.launch.mode == "torchrun"
    assert result.manifest["llamafactory_args"]["bf16"] is True
    assert result.losses and result.losses[-1] < result.losses[0]
