"""``medsage demo``: the README's one command, end to end on 2 CPU cores with no network.

Today: build the tiny model -> write generated LVKC samples (records + LLaVA SFT file) -> a real,
short LLaMA-Factory SFT -> load the checkpoint, answer one question, parse it with the scaffold.
Later stages (RL, evaluation, report) join this same command as they land.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


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
    from medsage.launch.sft import run_sft
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
    # The SFT stage itself (`medsage sft` with recipes/sft/tiny_cpu.yaml); --fresh so that every demo run
    # trains anew into demo_out/sft/run_NNN instead of finding the previous demo's finished run.
    sft = run_sft(["model=tiny", f"model.path={model_dir}", "sft=tiny_cpu", "cluster=local_cpu",
                   f"data.dataset_dir={data_dir}", "data.dataset=demo_sft", f"output.dir={out / 'sft'}",
                   f"sft.num_train_epochs={args.epochs}"], fresh=True, quiet=True)
    sft_dir, losses = sft.run_dir, sft.losses

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
    print(f"  SFT log         {sft_dir / 'train.log'}")
    print(f"  question        {sample.question}")
    print(f"  model reply     {reply[:160]!r}")
    print(f"  answer parsed   {found.answer!r} (via {found.how})")
    return 0
