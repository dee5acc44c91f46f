"""The training process of ``medsage sft``: ``llamafactory-cli train <yaml>`` plus medsage's checkpoint-load check.

    python llamafactory_train.py <llamafactory_sft.yaml>               (CPU: one process)
    python llamafactory_train.py --torchrun <llamafactory_sft.yaml>    (GPUs, or nodes: torchrun starts every rank)

It calls LLaMA-Factory's ``run_exp`` with one more callback, through LLaMA-Factory's own extension point
(``run_exp(callbacks=...)``); everything else is LLaMA-Factory's. Why the callback: transformers 5 saves a
checkpoint under the model's original key names (``save_pretrained`` reverts its load-time key conversion, so
Qwen2.5-VL's ``model.language_model.layers.*`` are written as ``model.layers.*``), but the Trainer's resume
(``Trainer._load_from_checkpoint``, and ``_load_best_model`` for ``load_best_model_at_end``; private, read in
transformers 5.5.4) reads that file with ``load_state_dict(strict=False)`` and no key conversion. It only warns
"There were missing keys" and trains on from the base model's language-model weights. The callback loads the
checkpoint again through transformers' public loader (``from_pretrained``, which converts the names), copies
it into the training model in place (the optimizer keeps its parameters and the state the Trainer loaded), and
checks that every tensor now equals the checkpoint's; otherwise the process fails. On world rank 0 it writes
what it checked to the file named by ``$MEDSAGE_RESUME_RECORD``: ``medsage sft`` refuses to call a resumed run
finished without it.

Run in the SFT stage environment (``cluster.envs.sft``): it needs llamafactory, transformers and torch there and
nothing of medsage. Importing this module imports only the standard library.
"""

from __future__ import annotations

import json
import os
import sys

# Where the trainer writes what it checked after loading the resumed checkpoint (set by ``medsage sft``).
RECORD_ENV = "MEDSAGE_RESUME_RECORD"


class CheckpointLoadError(RuntimeError):
    """The model's weights after a checkpoint load are not the checkpoint's: training must not go on."""


def restore_weights(model, checkpoint: str) -> dict:
    """Copy ``checkpoint``'s weights into ``model`` as ``from_pretrained`` reads them and check every tensor.

    Returns what was checked: the tensor count and how many of them the Trainer's own load had left different.
    Raises ``CheckpointLoadError`` if the checkpoint does not load cleanly or the copy does not take."""
    import torch

    # A second copy of the model in CPU memory while this runs (only on a resume: DeepSpeed, the GPU recipes'
    # launch, never gets here). float32 holds every bf16/fp16/fp32 value exactly, and load_state_dict casts each
    # tensor back to its parameter's dtype.
    loaded, info = type(model).from_pretrained(checkpoint, dtype=torch.float32, output_loading_info=True)
    problems = {k: sorted(v)[:5] for k, v in info.items() if v}
    if problems:
        raise CheckpointLoadError(f"{checkpoint} does not load cleanly into {type(model).__name__}: {problems}")
    source = loaded.state_dict()
    if source.keys() != model.state_dict().keys():
        only = sorted(source.keys() ^ model.state_dict().keys())[:5]
        raise CheckpointLoadError(f"{checkpoint} and the training model name different tensors (e.g. {only})")

    def differing() -> list[str]:
        return [k for k, v in model.state_dict().items()
                if not torch.allclose(v.detach().cpu().float(), source[k], rtol=0, atol=0, equal_nan=True)]

    left = differing()
    model.load_state_dict(source, strict=True)  # copies into the same parameters: the optimizer still holds them
    still = differing()
    if still:
        raise CheckpointLoadError(f"after loading {checkpoint}, {len(still)} tensors still differ from it: {still[:5]}")
    return {"checkpoint": checkpoint, "loader": f"{type(model).__name__}.from_pretrained",
            "tensors": len(source), "left_by_trainer": len(left), "left_by_trainer_examples": left[:3]}


def _callback():
    """The ``TrainerCallback`` (built here so that importing this module needs no transformers)."""
    from transformers import TrainerCallback
    from transformers.trainer_utils import get_last_checkpoint

    class CheckpointLoadCheck(TrainerCallback):
        """After the Trainer loads a checkpoint's weights (resume, best model at end): the checkpoint's, or fail."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            checkpoint = args.resume_from_checkpoint
            if checkpoint is True:  # Trainer.train() resolves True to the newest checkpoint the same way
                checkpoint = get_last_checkpoint(args.output_dir)
            if not checkpoint or state.global_step == 0:
                return
            record = self._check(args, state, model, str(checkpoint), "resumed weights")
            if state.is_world_process_zero:
                _write_record({**record, "global_step": state.global_step})

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if args.load_best_model_at_end and state.best_model_checkpoint:
                self._check(args, state, model, state.best_model_checkpoint, "best model")

        @staticmethod
        def _check(args, state, model, checkpoint: str, what: str) -> dict:
            if args.fsdp or hasattr(model, "peft_config"):
                raise CheckpointLoadError("medsage checks checkpoint loads of full and freeze fine-tuning without FSDP "
                                          "only: start a new run (--fresh), without load_best_model_at_end")
            if args.deepspeed:
                # DeepSpeed loads its own global_step*/ files, saved under the model's own names, with
                # load_module_strict: a missing or unexpected key stops it.
                record = {"checkpoint": checkpoint, "loader": "deepspeed (strict module load)"}
            else:
                record = restore_weights(model, checkpoint)
            if state.is_world_process_zero:
                done = (f"{record['tensors']} tensors equal, {record['left_by_trainer']} of them restored after the "
                        "Trainer's own load" if "tensors" in record else record["loader"])
                print(f"[medsage] {what} checked against {checkpoint}: {done}", flush=True)
            return record

    return CheckpointLoadCheck()


def _write_record(record: dict) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=2)
    os.replace(tmp, path)


def torchrun_command(args: list[str], environ=os.environ) -> list[str]:
    """This script under torchrun on every rank of this node, from the variables LLaMA-Factory's own launcher reads
    (NPROC_PER_NODE, NNODES; with several nodes NODE_RANK and MASTER_ADDR, MASTER_PORT 29500 unless set), read when
    the launch runs: Ray's per-node placement (launch/pipeline/per_node.py) sets the rank and address per node."""
    nproc, nnodes = environ.get("NPROC_PER_NODE", "1"), environ.get("NNODES", "1")
    if nnodes == "1":
        rendezvous = ["--standalone"]  # torchrun picks a free local port
    else:
        missing = [v for v in ("MASTER_ADDR", "NODE_RANK") if not environ.get(v)]
        if missing:
            raise SystemExit(f"llamafactory_train.py: NNODES={nnodes} needs {' and '.join(missing)} on every node")
        rendezvous = ["--nnodes", nnodes, "--node_rank", environ["NODE_RANK"], "--master_addr",
                      environ["MASTER_ADDR"], "--master_port", environ.get("MASTER_PORT", "29500")]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, "--nproc_per_node", nproc,
            os.path.abspath(__file__), *args]


def main() -> None:
    if sys.argv[1:2] == ["--torchrun"]:  # the launcher: every rank runs this script again, without the flag
        command = torchrun_command(sys.argv[2:])
        os.execv(command[0], command)
    # LLaMA-Factory reads the YAML (and any key=value overrides) from sys.argv, as `llamafactory-cli train` does.
    from llamafactory.train.tuner import run_exp

    run_exp(callbacks=[_callback()])


if __name__ == "__main__":
    # Never let this folder shadow the real `llamafactory` package (plugins/engines/llamafactory.py).
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
    main()
