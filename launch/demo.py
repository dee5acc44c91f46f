"""``medsage demo``: the README's one command, end to end on 2 CPU cores with no network.

Today: build the tiny model -> write generated LVKC samples (records + LLaVA SFT file) -> a real,
short LLaMA-Factory SFT -> load the checkpoint, answer one question, parse it with the scaffold.
Later stages (RL, evaluation, report) join this same command as they land.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def write_lf_config(model_dir: Path, dataset_dir: Path, dataset: str, out_dir: Path, epochs: int) -> dict:
    """A LLaMA-Factory SFT config for the tiny model on CPU (bf16 off, vision tower frozen)."""
    return {
        "model_name_or_path": str(model_dir),
        "trust_remote_code": False,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full",
        "freeze_vision_tower": True,
        "dataset": dataset,
        "dataset_dir": str(dataset_dir),
        "template": "qwen2_vl",
        "cutoff_len": 1024,
        "preprocessing_num_workers": 1,
        "dataloader_num_workers": 0,
        "output_dir": str(out_dir),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "num_train_epochs": epochs,
        "learning_rate": 1.0e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "bf16": False,
        "report_to": "none",
    }


def run_llamafactory_train(config: dict, config_path: Path, log_path: Path) -> list[float]:
    """Run ``llamafactory-cli train`` on ``config``; return the logged losses. Fails with the log tail."""
    import yaml

    from medsage.io import atomic_write_text

    atomic_write_text(config_path, yaml.safe_dump(config, sort_keys=False))
    cli = Path(sys.executable).with_name("llamafactory-cli")
    cmd = [str(cli) if cli.exists() else "llamafactory-cli", "train", str(config_path)]
    env = {**os.environ, "DISABLE_VERSION_CHECK": "1", "FORCE_TORCHRUN": "0", "CUDA_VISIBLE_DEVICES": ""}
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"llamafactory-cli train failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    log_file = Path(config["output_dir"]) / "trainer_log.jsonl"
    return [json.loads(line)["loss"] for line in log_file.read_text().splitlines() if '"loss"' in line]


def generate(model_dir: Path, image: str, prompt: str, max_new_tokens: int = 48) -> str:
    """Greedy answer of a checkpoint to one image + question, through transformers."""
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir).eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[Image.open(image).convert("RGB")], text=[text], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="medsage demo",
        description="Run the embedded demo on CPU: tiny model, generated LVKC data, real LLaMA-Factory SFT, "
                    "then the trained model answers a question. Needs the `sft` extra (make demo installs it).",
    )
    parser.add_argument("--out", default="demo_out", help="output folder (default: ./demo_out)")
    parser.add_argument("--samples", type=int, default=12, help="generated samples (default: 12)")
    parser.add_argument("--epochs", type=int, default=3, help="SFT epochs (default: 3)")
    args = parser.parse_args(argv)

    from medsage.answers import extract_answer
    from medsage.data_pipeline.demo_samples import make_demo_samples
    from medsage.data_pipeline.writers import write_llava_sft
    from medsage.records import write_records
    from medsage.scaffold import check_strict
    from medsage.tiny_model import build_tiny_model

    out = Path(args.out).resolve()
    started = time.time()
    total = 4
    _step(1, total, "building the tiny Qwen2.5-VL")
    model_dir = build_tiny_model(out / "tiny_model")

    _step(2, total, f"writing {args.samples} generated LVKC samples")
    data_dir = out / "data"
    samples = make_demo_samples(data_dir, n=args.samples)
    for s in samples:  # the data writers only emit trajectories the strict parser accepts
        _, issues = check_strict(s.trajectory.render(), require_region=True)
        if issues:
            raise RuntimeError(f"demo sample {s.id} is not a valid trajectory: {issues}")
    records = write_records(data_dir / "records.jsonl", samples)
    sft_file = write_llava_sft(samples, data_dir, name="demo_sft")

    _step(3, total, f"SFT of the tiny model with LLaMA-Factory ({args.epochs} epochs, CPU)")
    sft_dir = out / "sft"
    config = write_lf_config(model_dir, data_dir, "demo_sft", sft_dir, args.epochs)
    losses = run_llamafactory_train(config, out / "sft_config.yaml", out / "sft.log")

    _step(4, total, "asking the trained model one question")
    sample = samples[0]
    reply = generate(sft_dir, sample.images[0], sample.prompt_text())
    found = extract_answer(reply)

    print()
    print(f"demo finished in {time.time() - started:.0f} s")
    print(f"  tiny model      {model_dir}")
    print(f"  records         {records}")
    print(f"  SFT data        {sft_file} (+ dataset_info.json)")
    print(f"  SFT checkpoint  {sft_dir}   loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps")
    print(f"  SFT log         {out / 'sft.log'}")
    print(f"  question        {sample.question}")
    print(f"  model reply     {reply[:160]!r}")
    print(f"  answer parsed   {found.answer!r} (via {found.how})")
    return 0
