"""The one-way adapter from a composed SFT recipe to LLaMA-Factory: args, validation, launch.

- ``lf_args(cfg)``: the composed recipe (model / sft / cluster / data groups) -> the dict that
  ``llamafactory-cli train <yaml>`` reads. On CPU bf16 and DeepSpeed are switched off here.
- ``validate(args, schema)``: every key checked against LLaMA-Factory's OWN argument dataclasses
  (the ones ``hparams/parser.py`` hands to ``HfArgumentParser``); an unknown or misspelt key fails
  with the closest valid name, a value outside a ``Literal[...]`` fails with the choices.
- ``load_schema(python)``: reads those dataclasses in the Python environment that will train
  (it may be another virtualenv, ``cluster.envs.sft``) and caches the result per LLaMA-Factory and
  transformers version, so a warm ``medsage sft`` does not pay the ~10 s torch/transformers import.
- ``plan_launch(cluster, yaml)``: ``llamafactory_train.py <yaml>`` (LLaMA-Factory's training plus medsage's
  checkpoint-load check) in the stage environment's Python on CPU; on GPUs the same script on every rank under
  torchrun; on a Ray cluster, and across nodes, one such launch per node placed by Ray.

Run as a script (``python llamafactory.py --schema``) this file prints the schema of the
LLaMA-Factory importable by that interpreter; it needs nothing but the standard library and
llamafactory there, so it works in a stage environment without medsage installed.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Recipe keys of the `sft` group that are medsage's, not LLaMA-Factory's.
_MEDSAGE_SFT_KEYS = {"name", "deepspeed", "extra"}
# Packages whose versions go into the run manifest.
_VERSIONED = ["medsage", "llamafactory", "transformers", "torch", "accelerate", "peft", "datasets",
              "deepspeed", "tokenizers", "hydra-core", "omegaconf"]


# model.attn_implementation (resolved: never auto) as LLaMA-Factory's `flash_attn` argument
# (hparams/model_args.py, AttentionFunction: auto | disabled | sdpa | fa2 | fa3)
LF_ATTENTION = {"flash_attention_2": "fa2", "sdpa": "sdpa", "eager": "disabled"}


class LlamaFactoryArgError(ValueError):
    """A generated LLaMA-Factory argument is unknown or has a value LLaMA-Factory does not accept."""


# --------------------------------------------------------------------------------------------
# recipe -> LLaMA-Factory args
# --------------------------------------------------------------------------------------------
def deepspeed_config_path(name: str | None) -> str | None:
    """``zero2`` -> the project's ``recipes/deepspeed/zero2.json``; a path is taken as it is."""
    if not name:
        return None
    if name.endswith(".json") or os.sep in name:
        path = Path(name).expanduser().resolve()
    else:
        from medsage.recipes import recipes_dir

        path = recipes_dir() / "deepspeed" / f"{name}.json"
    if not path.is_file():
        raise LlamaFactoryArgError(f"sft.deepspeed={name!r}: no DeepSpeed config at {path}")
    return str(path)


def lf_args(cfg: Any, output_dir: str | Path) -> dict:
    """The LLaMA-Factory train args for a composed ``sft`` recipe, writing into ``output_dir``.

    ``cfg`` is the OmegaConf config composed from recipes/sft.yaml (or a plain dict of the same shape).
    """
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    model, sft, cluster, data = c["model"], c["sft"], c["cluster"], c["data"]
    on_gpu = cluster["accelerator"] == "gpu"
    from medsage.model_folder import model_folder_problem

    model_path = str(model["path"])
    if problem := model_folder_problem(model_path):  # named here, not as a tokenizer traceback minutes in
        raise LlamaFactoryArgError(problem)
    local = Path(model_path).expanduser()
    if local.exists():
        model_path = str(local.resolve())  # the trainer may run from another working directory
    # anything else is a Hugging Face hub id, fetched by LLaMA-Factory on the training node
    from medsage.launch.preflight import stage_attention

    try:
        attention = stage_attention(str(model["attn_implementation"]), (cluster.get("envs") or {}).get("sft"),
                                    on_gpu=on_gpu)
    except ValueError as err:
        raise LlamaFactoryArgError(str(err)) from None
    args: dict[str, Any] = {
        ### model
        "model_name_or_path": model_path,
        "template": model["template"],
        "image_max_pixels": model["image_max_pixels"],
        "image_min_pixels": model["image_min_pixels"],
        # model.attn_implementation, resolved in the SFT environment; a recipe's own sft.flash_attn still wins
        "flash_attn": LF_ATTENTION[attention],
        "trust_remote_code": False,
        ### method
        "stage": "sft",
        "do_train": True,
        ### dataset
        "dataset": data["dataset"],
        "dataset_dir": str(Path(data["dataset_dir"]).expanduser().resolve()),
        ### output
        "output_dir": str(output_dir),
        # never True: LLaMA-Factory resumes from the last checkpoint-N only when this is off
        "overwrite_output_dir": False,
    }
    args.update({k: v for k, v in sft.items() if k not in _MEDSAGE_SFT_KEYS})
    args.update(sft.get("extra") or {})
    if on_gpu:
        ds = deepspeed_config_path(sft.get("deepspeed"))
        if ds:
            args["deepspeed"] = ds
    else:
        # CPU: no bf16/fp16 kernels for training and no DeepSpeed (it needs torchrun + CUDA).
        args["bf16"] = False
        args["fp16"] = False
        args.pop("deepspeed", None)
    return args


def effective_batch(args: dict, cluster: Any) -> tuple[int, str]:
    """Sequences per optimizer step and how it multiplies out (one process per node on CPU)."""
    per_device = int(args.get("per_device_train_batch_size", 8))
    accum = int(args.get("gradient_accumulation_steps", 1))
    nodes = int(cluster["nnodes"])
    gpus = int(cluster["gpus_per_node"]) if cluster["accelerator"] == "gpu" else 1
    total = per_device * accum * gpus * nodes
    how = f"{per_device} per device x {accum} accumulation x {gpus} {'GPU' if gpus == 1 else 'GPUs'}" \
          f" x {nodes} {'node' if nodes == 1 else 'nodes'} = {total}"
    if cluster["accelerator"] != "gpu":
        processes = "1 CPU process" if nodes == 1 else f"{nodes} CPU processes"
        how = f"{per_device} per step x {accum} accumulation x {processes} = {total}"
    return total, how


# --------------------------------------------------------------------------------------------
# validation against LLaMA-Factory's own dataclasses
# --------------------------------------------------------------------------------------------
def validate(args: dict, schema: dict) -> None:
    """Raise ``LlamaFactoryArgError`` naming every bad key (with the closest valid name) or value."""
    fields = schema["fields"]
    problems = []
    for key, value in args.items():
        spec = fields.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown LLaMA-Factory argument {key!r}{hint}")
            continue
        choices = spec.get("choices")
        if choices is not None and value is not None and value not in choices:
            problems.append(f"{key}={value!r} is not one of {choices} ({spec['cls']})")
        elif value is not None and not _kind_ok(spec.get("kind"), value):
            problems.append(f"{key}={value!r} should be {spec['kind']} ({spec['cls']})")
    if problems:
        version = schema.get("versions", {}).get("llamafactory", "?")
        raise LlamaFactoryArgError(f"LLaMA-Factory {version} rejects the generated args:\n  - "
                                   + "\n  - ".join(problems))


def _kind_ok(kind: str | None, value: Any) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True  # unions, lists, dicts: LLaMA-Factory's own parser checks them at start


def load_schema(python: str | None = None) -> dict:
    """The LLaMA-Factory train-argument schema of ``python``'s environment (cached per version)."""
    python = python or sys.executable
    versions = engine_versions(python)
    if not versions.get("llamafactory"):
        from medsage.launch.preflight import setup_command

        raise LlamaFactoryArgError(f"llamafactory is not installed for {python} ({setup_command('sft')})")
    key = hashlib.sha256(json.dumps([os.path.realpath(python), versions.get("llamafactory"),
                                     versions.get("transformers"), os.environ.get("USE_MCA", "")]).encode())
    from medsage.runtime import cache_root

    cache = cache_root() / f"llamafactory_schema_{key.hexdigest()[:16]}.json"
    if cache.is_file():
        try:
            return json.loads(cache.read_text())
        except json.JSONDecodeError:
            pass  # a damaged cache is rebuilt below
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--schema"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise LlamaFactoryArgError(f"could not read LLaMA-Factory's argument classes with {python}:\n"
                                   + proc.stderr[-2000:])
    schema = json.loads(proc.stdout.strip().splitlines()[-1])
    schema["versions"] = versions
    try:
        from medsage.io import atomic_write_json

        atomic_write_json(cache, schema)
    except (ImportError, OSError):
        pass  # no cache: correct, only slower
    return schema


def engine_versions(python: str | None = None) -> dict[str, str | None]:
    """Installed versions of the packages a run depends on, in ``python``'s environment (no imports)."""
    from medsage.runtime import package_versions  # here: as a script this file runs without medsage

    try:
        probe = package_versions(python, _VERSIONED)
    except (RuntimeError, OSError) as err:
        raise LlamaFactoryArgError(str(err)) from None
    return {"python": probe["python_version"], **probe["packages"]}


def _schema_here() -> dict:
    """Fields of the dataclasses LLaMA-Factory's train parser uses (imports torch; ~10 s)."""
    import typing

    from llamafactory.hparams import (DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments,
                                      TrainingArguments)

    fields: dict[str, dict] = {}
    for cls in (ModelArguments, DataArguments, TrainingArguments, FinetuningArguments, GeneratingArguments):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            fields[f.name] = {"cls": cls.__name__, **_describe_type(hints.get(f.name, f.type))}
    return {"fields": fields}


def _describe_type(tp: Any) -> dict:
    import types
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:  # Optional[X] -> X
        return _describe_type(args[0])
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(tp))}
    for kind in (bool, int, float, str):
        if tp is kind:
            return {"kind": kind.__name__}
    return {"kind": "other"}


# --------------------------------------------------------------------------------------------
# launch selection
# --------------------------------------------------------------------------------------------
@dataclass
class Launch:
    """The exact command and environment ``medsage sft`` runs."""

    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)  # set on top of os.environ
    mode: str = "cpu"  # cpu | torchrun | ray (one torchrun per node, placed by Ray)
    processes: int = 1

    def describe(self) -> str:
        shown = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{shown} {' '.join(self.cmd)}".strip()


def plan_launch(cluster: Any, config_path: str | Path, record: str | Path | None = None) -> Launch:
    """CPU: ``llamafactory_train.py <yaml>`` in the stage environment's Python, no GPU visible; GPUs: the same
    script on every rank through torchrun. ``record``: where the trainer writes its resumed-weights check."""
    from medsage.plugins.engines.llamafactory_train import RECORD_ENV

    from medsage.runtime import stage_python

def plan_launch(cluster: Any, config_path: str | Path, record: str | Path | None = None) -> Launch:
    """How LLaMA-Factory trains ``config_path`` on ``cluster`` (a composed ``recipes/cluster/`` dict), always through
    ``llamafactory_train.py`` (``llamafactory-cli train`` plus medsage's checkpoint-load check; ``record``: where the
    trainer writes that check).

    - CPU, one node: the script, no GPU visible.
    - GPUs: the script's ``--torchrun`` mode, which starts torchrun with NPROC_PER_NODE=gpus_per_node and
      NNODES=nnodes (and NODE_RANK / MASTER_ADDR / MASTER_PORT of its node) on every rank, as LLaMA-Factory's own
      launcher does; not ``llamafactory-cli train`` with FORCE_TORCHRUN=1, whose launcher runs its own script on
      each rank, without the check.
    - Inside a Ray cluster (a pipeline stage, or ``cluster.ray_address``) with GPUs, and on several nodes always:
      Ray places that launch once per node, each holding the node's GPUs, with NODE_RANK / MASTER_ADDR /
      MASTER_PORT set per node (``launch/pipeline/per_node.py``); on CPU one gloo process per node.
    - ``cluster.ray_address`` (or ``RAY_ADDRESS``) outside any Ray job: the launch is submitted to that cluster as
      a job (``launch/pipeline/submit.py``), since ``ray.init`` does not take every address the cluster has.
    """
    from medsage.launch.pipeline import per_node, submit
    from medsage.launch.pipeline.ray_jobs import configured_address, in_ray_job
    from medsage.plugins.engines.llamafactory_train import RECORD_ENV
    from medsage.runtime import stage_python

    python = stage_python((cluster.get("envs") or {}).get("sft"))
    script = str(Path(__file__).with_name("llamafactory_train.py"))
    gpu = cluster["accelerator"] == "gpu"
    gpus, nodes = int(cluster["gpus_per_node"]), int(cluster["nnodes"])
    if nodes < 1 or (gpu and gpus < 1):
        raise LlamaFactoryArgError(f"cluster {cluster.get('name')}: gpus_per_node={gpus} nnodes={nodes}")
    in_job = in_ray_job()
    address = None if in_job else configured_address(cluster.get("ray_address"))
    if nodes > 1 and not (in_job or address):
        raise LlamaFactoryArgError(
            f"cluster {cluster.get('name')} has {nodes} nodes: medsage places one torchrun per node through Ray. Set "
            "cluster.ray_address to the running cluster (ray://head:10001 or http://head:8265), or run SFT as a stage "
            "of `medsage pipeline` on it (docs/multinode.md)")
    env = {"DISABLE_VERSION_CHECK": "1", **({RECORD_ENV: str(record)} if record else {})}
    if gpu or nodes > 1:
        cmd = [python, script, "--torchrun", str(config_path)]
        env.update(NPROC_PER_NODE=str(gpus if gpu else 1), NNODES=str(nodes))
        # what LLaMA-Factory's launcher sets for its torchrun (OPTIM_TORCH); CPU across nodes: one gloo process each
        env.update({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "TORCH_NCCL_AVOID_RECORD_STREAMS": "1"}
                   if gpu else {"CUDA_VISIBLE_DEVICES": ""})
    else:
        cmd = [python, script, str(config_path)]
        env["CUDA_VISIBLE_DEVICES"] = ""
    mode, processes = ("torchrun", gpus * nodes) if gpu else ("cpu", nodes)
    if nodes > 1 or (gpu and (in_job or address)):
        cmd, env, mode = per_node.placed(nodes, gpus if gpu else 0, cmd, env, python), {}, "ray"
    if address:
        cmd, env = submit.wrap(address, cmd, python=python, env=env), {}
    return Launch(cmd, env, mode, processes)


if __name__ == "__main__":
    # Never let this folder shadow the real `llamafactory` package when run as a script.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    if sys.argv[1:] == ["--schema"]:
        print(json.dumps(_schema_here()))
    else:
        print("usage: python llamafactory.py --schema", file=sys.stderr)
        raise SystemExit(2)
