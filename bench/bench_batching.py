"""Transformers-backend batching gain on the tiny model: batched vs one-at-a-time items/s.

    .venv/bin/python bench/bench_batching.py                 # 24 items, batch 8, 32 new tokens
    .venv/bin/python bench/bench_batching.py --batch 16 --items 48

Builds the tiny Qwen2.5-VL in a temporary folder and generated LVKC items (no network), runs the
same requests through HFBackend with batch size 1 and with --batch, and prints items/s and the ratio.
Outputs are also compared: greedy decoding with left padding should give the same text.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from medsage.launch.demo.samples import make_demo_samples
    from medsage.eval.backends.base import GenerationConfig
    from medsage.eval.backends.hf import HFBackend
    from medsage.eval.prompting import PromptConfig, build_request
    from medsage.launch.demo.tiny_model import build_tiny_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        samples = make_demo_samples(Path(tmp) / "data", n=args.items)
        prompt = PromptConfig(template="{question}\n{options}{instruction}",
                              instructions={"closed": "Answer yes or no.", "open": "Answer briefly.", "choice": "Pick one."})
        requests = [build_request(s, prompt) for s in samples]
        # A fixed output length: both modes do the same work, so the ratio is the batching gain alone.
        backend = HFBackend(str(model), GenerationConfig(max_new_tokens=args.new_tokens), device=args.device)
        backend.model.generation_config.eos_token_id = None
        backend.generate(requests[:2])  # warm-up
        timings = {}
        outputs = {}
        for bs in (1, args.batch):
            began = time.perf_counter()
            outs = []
            for i in range(0, len(requests), bs):
                outs += backend.generate(requests[i:i + bs])
            timings[bs] = time.perf_counter() - began
            outputs[bs] = outs
    same = sum(a == b for a, b in zip(outputs[1], outputs[args.batch]))
    print(f"device               {backend.device}, {args.items} items, {args.new_tokens} new tokens each")
    print(f"one at a time        {args.items / timings[1]:.2f} items/s")
    print(f"batched ({args.batch:>2})         {args.items / timings[args.batch]:.2f} items/s")
    print(f"batching gain        {timings[1] / timings[args.batch]:.2f}x")
    print(f"identical outputs    {same}/{args.items}")


if __name__ == "__main__":
    main()
