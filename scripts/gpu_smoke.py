"""GPU smoke check: the parts of medsage that only a GPU exercises, in under 10 minutes on one GPU.

    python3 scripts/gpu_smoke.py wheels .whl         # on a machine with PyPI (any Python with pip): what a bare GPU image lacks
    python scripts/gpu_smoke.py run --out DIR        # on the GPU machine (no network needed)
    python scripts/gpu_smoke.py run --out DIR --cpu  # the same steps on a CPU, to rehearse the script

It checks, on the tiny random Qwen2.5-VL that the tests build (no download):
1. LLaMA-Factory SFT on CUDA in bf16 through medsage's GPU launch path (``cluster=a100_1x``: torchrun with one
   process), the loss falling;
2. the vision-tower freeze on CUDA: every tower weight equal after training, language-model weights changed;
3. the transformers eval backend on CUDA in bf16, generating for two questions with images.
DeepSpeed, vLLM and Ray are not exercised here (a bare GPU image has none, and DeepSpeed and vLLM are too large
to carry); the dress-rehearsal tests install them from the locks and validate the GPU recipes on CPU.

``run`` writes ``<out>/gpu_smoke.json`` (each check, its evidence, the versions and the GPU) and exits 1 if a
check failed. ``wheels`` downloads, for Python 3.12 on x86-64 Linux, the pure and binary wheels that the SFT path
imports and a bare CUDA PyTorch image usually lacks (LLaMA-Factory, transformers at the tested version, Hydra);
install them there and run (``run`` lays out medsage's packages from this checkout by itself):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site python3 scripts/gpu_smoke.py run --out $OUT/smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# medsage's import names and the repository folders they live in (pyproject's package-dir).
PACKAGE_DIRS = {"medsage": "medsage", "data_pipeline": "data_pipeline", "plugins": "plugins", "eval": "eval",
                "launch": "launch", "recipes": "recipes"}
# The SFT path's imports that a CUDA PyTorch image (torch, accelerate, peft, tokenizers, numpy, pandas, pyarrow,
# pyyaml, safetensors, scipy ...) does not hold, at the versions medsage is tested with: about 15 MiB. PyAV (40 MiB)
# is left out: LLaMA-Factory imports it only for video.
WHEELS = ["llamafactory==0.9.5", "transformers==5.5.4", "peft==0.18.1", "trl==0.24.0", "datasets==4.0.0",
          "dill==0.3.8", "multiprocess==0.70.16", "torchdata==0.11.0", "tyro==0.8.14", "docstring-parser",
          "shtab", "typeguard", "fire", "termcolor", "hydra-core==1.3.2", "omegaconf==2.3.0"]
WHEEL_LIMIT_MB = 60


def wheels(dest: Path) -> int:
    """Download ``WHEELS`` for CPython 3.12 on manylinux x86-64 into ``dest``, plus Hydra's parser runtime."""
    import importlib.util

    if importlib.util.find_spec("pip") is None:  # uv's virtualenvs have none
        print(f"{sys.executable} has no pip: run this step with a Python that has (python3 {__file__} wheels ...)",
              file=sys.stderr)
        return 2
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [a for n in (28, 27, 17) for a in ("--platform", f"manylinux_2_{n}_x86_64")]
    platforms += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
    base = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    binary = [*base, "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *platforms]
    for spec in WHEELS:
        subprocess.run([*binary, spec], check=True)
    # antlr4-python3-runtime 4.9.3 (omegaconf's pin) is published as a source archive only: build its pure wheel
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest),
                    "antlr4-python3-runtime==4.9.3"], check=True)
    size = sum(f.stat().st_size for f in dest.glob("*.whl")) / 2**20
    print(f"{len(list(dest.glob('*.whl')))} wheels, {size:.1f} MiB in {dest}")
    if size > WHEEL_LIMIT_MB:
        print(f"over {WHEEL_LIMIT_MB} MiB: too large to carry", file=sys.stderr)
        return 1
    return 0


def _import_medsage() -> None:
    """Make ``medsage.*`` importable from this checkout without installing it (the GPU machine has no build tools
    for an editable install offline): a folder of links that mirrors pyproject's package-dir mapping."""
    try:
        import medsage.launch.sft  # noqa: F401  (installed: nothing to do)
        return
    except ImportError:
        pass
    src = REPO / ".smoke_src" / "medsage"
    src.mkdir(parents=True, exist_ok=True)
    for name, folder in PACKAGE_DIRS.items():
        if name == "medsage":
            for item in (REPO / folder).iterdir():
                link = src / item.name
                if not link.exists():
                    link.symlink_to(item)
        elif not (src / name).exists():
            (src / name).symlink_to(REPO / folder)
    sys.path.insert(0, str(src.parent))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(src.parent), os.environ.get("PYTHONPATH", "")])


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def _is_vision(name: str) -> bool:
    return "visual" in name


def run(out: Path, cpu: bool) -> int:
    _import_medsage()
    import torch

    from medsage.data_pipeline.writers import write_llava_sft
    from medsage.eval.backends.base import GenerationConfig
    from medsage.eval.backends.hf import HFBackend
    from medsage.eval.prompting import ChatRequest, Part
    from medsage.launch.demo.samples import make_demo_samples
    from medsage.launch.demo.tiny_model import build_tiny_model
    from medsage.launch.sft import run_sft

    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", DISABLE_VERSION_CHECK="1")
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"device": "cpu" if cpu else torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "torch": torch.__version__, "torch_cuda": torch.version.cuda, "checks": {}}
    checks = report["checks"]
    if not cpu and not torch.cuda.is_available():
        checks["cuda"] = {"ok": False, "detail": "torch sees no CUDA device"}
        return _finish(out, report)

    started = time.perf_counter()
    model_dir = build_tiny_model(out / "model", seed=0)
    samples = make_demo_samples(out / "data", n=12)
    write_llava_sft(samples, out / "data", name="smoke_sft")
    before = _tensors(model_dir)
    cluster = ["cluster=local_cpu"] if cpu else ["cluster=a100_1x", "sft.bf16=true"]
    overrides = ["model=tiny", f"model.path={model_dir}", "sft=tiny_cpu", *cluster, "sft.deepspeed=null",
                 f"data.dataset_dir={out / 'data'}", "data.dataset=smoke_sft", f"output.dir={out / 'sft'}",
                 "sft.num_train_epochs=3"]
    try:
        result = run_sft(overrides, fresh=True, quiet=True)
    except Exception as err:  # the check's evidence is the error itself
        checks["sft"] = {"ok": False, "detail": f"{type(err).__name__}: {err}"[-3000:]}
        return _finish(out, report)
    losses = result.losses
    checks["sft"] = {"ok": result.status == "finished" and bool(losses) and losses[-1] < losses[0]
                     and (cpu or (result.launch.mode == "torchrun" and result.args.get("bf16") is True)),
                     "launch": result.launch.describe(), "bf16": result.args.get("bf16"),
                     "attention": result.args.get("flash_attn"), "losses": [round(x, 4) for x in losses],
                     "seconds": round(time.perf_counter() - started, 1)}

    after = _tensors(result.run_dir)
    shared = [k for k in before if k in after]
    vision = [k for k in shared if _is_vision(k)]
    changed_vision = [k for k in vision if not torch.equal(before[k].float(), after[k].float())]
    language = [k for k in shared if not _is_vision(k)]
    changed_language = [k for k in language if not torch.equal(before[k].float(), after[k].float())]
    checks["freeze"] = {"ok": bool(vision) and not changed_vision and bool(changed_language),
                        "vision_tensors": len(vision), "vision_changed": changed_vision[:5],
                        "language_tensors": len(language), "language_changed": len(changed_language),
                        "unmatched_names": len(set(before) ^ set(after))}

    started = time.perf_counter()
    try:
        backend = HFBackend(str(result.run_dir), GenerationConfig(max_new_tokens=24))
        requests = [ChatRequest(s.id, (Part("image", str(s.images[0])), Part("text", s.question))) for s in samples[:2]]
        texts = backend.generate(requests)
        dtype = str(next(backend.model.parameters()).dtype)
        checks["eval_hf"] = {"ok": len(texts) == 2 and all(isinstance(t, str) for t in texts)
                             and (cpu or (backend.device.startswith("cuda") and dtype == "torch.bfloat16")),
                             "device": backend.device, "dtype": dtype, "outputs": texts,
                             "seconds": round(time.perf_counter() - started, 1)}
    except Exception as err:
        checks["eval_hf"] = {"ok": False, "detail": f"{type(err).__name__}: {err}"[-3000:]}
    return _finish(out, report)


def _finish(out: Path, report: dict) -> int:
    report["ok"] = all(c["ok"] for c in report["checks"].values()) and bool(report["checks"])
    (out / "gpu_smoke.json").write_text(json.dumps(report, indent=2, default=str))
    for name, check in report["checks"].items():
        print(f"[{'ok' if check['ok'] else 'FAILED'}] {name}: "
              + json.dumps({k: v for k, v in check.items() if k != "ok"}, default=str)[:600])
    print(f"gpu smoke: {'passed' if report['ok'] else 'FAILED'} ({out / 'gpu_smoke.json'})")
    return 0 if report["ok"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wheels", help="download the wheels a bare CUDA PyTorch image lacks")
    w.add_argument("dest", type=Path)
    r = sub.add_parser("run", help="run the checks")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--cpu", action="store_true", help="rehearse on a CPU (no bf16, no torchrun)")
    args = parser.parse_args()
    return wheels(args.dest) if args.command == "wheels" else run(args.out.resolve(), args.cpu)


if __name__ == "__main__":
    raise SystemExit(main())
