"""``medsage sft``: structured LVKC SFT through LLaMA-Factory, from a Hydra recipe (paper §3.2, B.1).

    medsage sft [--fresh] [--dry-run] [--quiet] [hydra overrides ...]
    medsage sft model=tiny model.path=demo_out/tiny_model sft=tiny_cpu cluster=local_cpu \
        data.dataset_dir=demo_out/data data.dataset=demo_sft sft.num_train_epochs=2

Top to bottom: compose recipes/sft.yaml -> check the data -> pick the run folder (new, resumed or
already finished) -> generate the LLaMA-Factory args and check every key against LLaMA-Factory's own
dataclasses -> pick the launch (CPU or torchrun) -> on GPUs, check the SFT environment (launch/preflight.py)
-> write the YAML and the run manifest -> run LLaMA-Factory's training (plugins/engines/llamafactory_train.py)
-> record the losses, check the exported model, mark the run finished.

Runs live under ``output.dir`` as ``run_001``, ``run_002``, ...: rerunning the same command resumes
the latest unfinished run from its last complete checkpoint (the trainer checks that its weights then equal
the checkpoint's, and a resumed run without that check is not marked finished), does nothing if it finished, and
``--fresh`` always starts a new ``run_NNN`` (a finished run is never overwritten). The finished run
folder is a standard Hugging Face folder (weights, processor, chat template) that the RL and eval
stages load directly; ``medsage_manifest.json`` sits beside it and inside every checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from medsage import runtime
from medsage.config import ClusterConfig, ConfigError, ModelConfig, typed
from medsage.launch import layout
from medsage.launch import sft_runs as runs
from medsage.launch.sft_runs import SftError

# What a folder needs to load with AutoProcessor + Qwen2_5_VLForConditionalGeneration; each inner list
# is "one of" (transformers 5 folds the image processor into processor_config.json).
_EXPORT_FILES = [["config.json"], ["tokenizer_config.json"], ["preprocessor_config.json", "processor_config.json"]]


@dataclass
class SftSection:
    """medsage's own keys of ``recipes/sft/<name>.yaml``. Every other key of the section is a LLaMA-Factory
    argument: passed through and checked against LLaMA-Factory's own dataclasses (``llamafactory.validate``)."""

    name: str                            # short name used in the run folder
    deepspeed: str | None = None         # recipes/deepspeed/<name>.json or a path; ignored on CPU
    extra: dict[str, Any] = field(default_factory=dict)  # more LLaMA-Factory arguments, validated too


@dataclass
class SftData:
    dataset_dir: str                     # folder with dataset_info.json
    dataset: Any                         # a name, comma-separated names, or a list of names


@dataclass
class SftOutput:
    dir: str                             # run root: <dir>/run_NNN


@dataclass
class SftRecipe:
    """recipes/sft.yaml as composed: the stage's sections, typed (``medsage.config.typed``)."""

    model: ModelConfig
    sft: SftSection
    cluster: ClusterConfig
    data: SftData
    output: SftOutput


@dataclass
class SftResult:
    """What one ``medsage sft`` invocation did."""

    run_dir: Path
    status: str  # finished | already_finished | dry_run
    losses: list[float] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    launch: Any = None  # plugins.llamafactory.Launch
    args: dict = field(default_factory=dict)  # the LLaMA-Factory args


def run_sft(overrides: list[str], *, fresh: bool = False, dry_run: bool = False, quiet: bool = False,
            stream: bool | None = None, extra_dirs: list[str | Path] = ()) -> SftResult:
    """Compose, validate, launch (or resume) and record one SFT run. Raises ``SftError`` on failure.

    ``quiet`` prints nothing (callers such as the demo print their own summary); ``stream`` echoes the
    trainer's output to the terminal (default: not quiet). Everything always goes to ``train.log``.
    """
    from contextlib import nullcontext

    from medsage.lock import FolderLocked, folder_lock

    stream = (not quiet) if stream is None else stream
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    cfg, recipe = _compose(overrides, extra_dirs)
    datasets = _check_data(recipe["data"])
    root = Path(recipe["output"]["dir"]).expanduser().resolve()
    # Two commands on one output.dir would both pick the same new run_NNN and train into it together.
    try:
        with nullcontext() if dry_run else folder_lock(root, "SFT run"):
            return _run(cfg, recipe, datasets, root, fresh, dry_run, quiet, stream, say)
    except FolderLocked as err:
        raise SftError(str(err)) from None


def _run(cfg, recipe: dict, datasets: dict, root: Path, fresh: bool, dry_run: bool, quiet: bool, stream: bool,
         say) -> SftResult:
    from medsage.plugins.engines import llamafactory as lf

    # Which run: a new one, the latest unfinished one (resume), or nothing to do.
    run_dir, previous = runs.pick_run(root, fresh)
    if previous is not None and previous.get("status") == "finished":
        losses = previous.get("losses", [])
        say(f"medsage sft: {run_dir} already finished at {previous.get('ended_at')} "
            f"(final loss {previous.get('final_loss')}); nothing to do. Use --fresh to train a new run.")
        return SftResult(run_dir, "already_finished", losses, previous)

    # The LLaMA-Factory args, checked against LLaMA-Factory's own dataclasses before anything runs.
    resume_from = runs.last_checkpoint(run_dir) if previous is not None else None
    try:
        args = lf.lf_args(recipe, run_dir)
        launch = lf.plan_launch(recipe["cluster"], run_dir / layout.SFT_LF_CONFIG, run_dir / layout.SFT_RESUME_CHECK)
        stage_python = runtime.stage_python(recipe["cluster"].get("envs", {}).get("sft"))
        if resume_from is not None:
            args["resume_from_checkpoint"] = str(resume_from)
        lf.validate(args, lf.load_schema(stage_python))
    except (lf.LlamaFactoryArgError, FileNotFoundError) as err:
        raise SftError(str(err)) from None
    batch, how = lf.effective_batch(args, recipe["cluster"])

    state = (f"resuming from {resume_from.name}" if resume_from
             else "restarting: no complete checkpoint yet" if previous else "new")
    say(f"medsage sft: run {run_dir} ({state})")
    say(f"  model            {args['model_name_or_path']}")
    say(f"  data             {args['dataset_dir']} :: {args['dataset']}")
    say(f"  effective batch  {how}")
    say(f"  launch           {launch.describe()}")
    if dry_run:
        import yaml

        say("  LLaMA-Factory YAML (dry run: nothing written, nothing launched):")
        say("    " + yaml.safe_dump(args, sort_keys=False).rstrip().replace("\n", "\n    "))
        return SftResult(run_dir, "dry_run", launch=launch, args=args)

    if recipe["cluster"]["accelerator"] == "gpu":
        _preflight(cfg, args)
    data_hash = _hash_data(Path(args["dataset_dir"]), datasets, quiet)
    if resume_from is not None:  # with no checkpoint yet there is nothing to mix: the run restarts
        runs.check_same_run(previous, args, data_hash, run_dir)
    manifest = runs.start_manifest(previous, recipe, args, data_hash, stage_python, launch, batch, resume_from)
    runs.write_run_files(run_dir, args, manifest)
    (run_dir / layout.SFT_RESUME_CHECK).unlink(missing_ok=True)  # an earlier attempt's check proves nothing now

    spawned = time.perf_counter()
    attempt = manifest["attempts"][-1]
    try:
        rc = runtime.run_logged(launch.cmd, run_dir / layout.SFT_TRAIN_LOG, env={**os.environ, **launch.env},
                                echo=stream, header=f"{runs.now()} {launch.describe()}")
    except BaseException:  # Ctrl-C: the trainer was stopped; the next run of the command resumes
        attempt.update(ended_at=runs.now(), exit_code=None)
        manifest.update(status="interrupted", ended_at=attempt["ended_at"])
        runs.save_manifest(run_dir, manifest)
        raise
    attempt.update(ended_at=runs.now(), exit_code=rc, trainer_seconds=round(time.perf_counter() - spawned, 3))
    if rc != 0:
        manifest.update(status="failed", ended_at=attempt["ended_at"])
        runs.save_manifest(run_dir, manifest)
        raise SftError(f"LLaMA-Factory training failed (exit {rc}); rerun the same command to resume.\n"
                       f"log {run_dir / layout.SFT_TRAIN_LOG}:\n{_tail(run_dir / layout.SFT_TRAIN_LOG)}")

    if resume_from is not None:
        try:
            attempt["weights_check"] = runs.check_resumed_weights(run_dir, resume_from)
        except SftError as err:
            manifest.update(status="failed", ended_at=attempt["ended_at"], error=str(err))
            runs.save_manifest(run_dir, manifest)
            raise
    losses = _losses(run_dir)
    missing = [" or ".join(names) for names in _EXPORT_FILES if not any((run_dir / n).is_file() for n in names)]
    if not any(run_dir.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        manifest.update(status="failed", ended_at=attempt["ended_at"], error=f"export incomplete: {missing}")
        runs.save_manifest(run_dir, manifest)
        raise SftError(f"training ended but {run_dir} lacks {missing}: not a loadable model folder")
    manifest.update(status="finished", ended_at=attempt["ended_at"], losses=losses,
                    final_loss=losses[-1] if losses else None, train_results=runs.read_json(run_dir / "train_results.json"))
    runs.save_manifest(run_dir, manifest)
    say(f"medsage sft: finished {run_dir}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} logged steps"
        if losses else f"medsage sft: finished {run_dir} (no loss logged)")
    return SftResult(run_dir, "finished", losses, manifest, launch, args)


def _preflight(cfg, args: dict) -> None:
    """The SFT environment against what these LLaMA-Factory args need (launch/preflight.py): CUDA and the
    cluster's GPUs, the driver, DeepSpeed where they set it, flash-attn where they force fa2."""
    from omegaconf import OmegaConf

    from medsage.launch import preflight

    flash = "LLaMA-Factory trains with flash_attn=fa2 (model.attn_implementation, or the SFT recipe's flash_attn)" \
        if args.get("flash_attn") == "fa2" else ""
    needs = preflight.sft_needs(cfg.cluster, deepspeed=args.get("deepspeed"), flash_attn=flash)
    envs = OmegaConf.to_container(cfg.cluster.envs, resolve=True)
    report = preflight.run(needs, envs.get("sft"), envs)
    if not report.ok:
        raise SftError(f"not launched: the SFT environment cannot run this recipe\n{report.render()}")


def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("Structured LVKC SFT through LLaMA-Factory. Composes recipes/sft.yaml with Hydra overrides, "
                          "checks every LLaMA-Factory key, runs LLaMA-Factory's training (torchrun on GPUs), and "
                          "resumes an interrupted run, weights checked, when the same command is run again.")
    parser.epilog = ("examples:\n  medsage sft data.dataset_dir=/data/sage_sft model.path=/models/Qwen2.5-VL-7B-Instruct\n"
                     "  medsage sft --dry-run cluster=a100_1x sft.gradient_accumulation_steps=64 data.dataset_dir=...")
    parser.add_argument("--fresh", action="store_true", help="start a new run_NNN instead of resuming the latest")
    parser.add_argument("--dry-run", action="store_true", help="print the run, launch and YAML; write nothing")
    parser.add_argument("--quiet", action="store_true", help="trainer output to train.log only (summary still printed)")
    add_overrides(parser, "model=tiny sft.num_train_epochs=2")


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.cli import parse

    args = parse("sft", argv)
    try:
        run_sft(args.overrides, fresh=args.fresh, dry_run=args.dry_run, stream=not args.quiet)
    except SftError as err:
        print(f"medsage sft: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medsage sft: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


# --------------------------------------------------------------------------------------------
# recipe and data
# --------------------------------------------------------------------------------------------
def _compose(overrides: list[str], extra_dirs) -> tuple[Any, dict]:
    """The composed recipe and its resolved dict, typed (``SftRecipe``) before anything else runs."""
    from hydra.errors import HydraException
    from medsage.recipes import compose
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose("sft", overrides, extra_dirs=extra_dirs)
        recipe = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise SftError(f"recipe: {err}") from None
    own = {f.name for f in fields(SftSection)}
    try:
        typed(SftRecipe, {**recipe, "sft": {k: v for k, v in recipe["sft"].items() if k in own}}, "recipes/sft.yaml")
    except ConfigError as err:
        raise SftError(str(err)) from None
    # The LLaMA-Factory keys: their names and types are LLaMA-Factory's to check; an unset one is ours.
    unset = [f"sft.{k}" for k in recipe["sft"] if k not in own and OmegaConf.is_missing(cfg.sft, k)]
    if unset:
        raise SftError(f"recipes/sft.yaml: {unset[0]} is required (???): set {unset[0]}=...")
    dataset = recipe["data"]["dataset"]
    if isinstance(dataset, (list, tuple)):
        recipe["data"]["dataset"] = ",".join(dataset)  # LLaMA-Factory takes a comma-separated string
    return cfg, recipe


def _check_data(data: dict) -> dict[str, dict]:
    """The dataset_info.json entries of the chosen datasets; a clear error naming the file otherwise."""
    dataset_dir = Path(data["dataset_dir"]).expanduser().resolve()
    info_path = dataset_dir / "dataset_info.json"
    if not info_path.is_file():
        raise SftError(f"data.dataset_dir={dataset_dir}: no dataset_info.json (write it with `medsage data`)")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise SftError(f"{info_path}:{err.lineno}: not valid JSON ({err.msg})") from None
    chosen = {}
    for name in [n.strip() for n in str(data["dataset"]).split(",") if n.strip()]:
        if name not in info:
            import difflib

            close = difflib.get_close_matches(name, list(info), n=1)
            raise SftError(f"{info_path}: no dataset {name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                           + f" (has: {', '.join(sorted(info)) or 'nothing'})")
        entry = info[name]
        if "file_name" in entry and not (dataset_dir / entry["file_name"]).exists():
            raise SftError(f"{info_path}: dataset {name!r} names {entry['file_name']!r}, which is not in {dataset_dir}")
        chosen[name] = entry
    return chosen


def _hash_data(dataset_dir: Path, datasets: dict[str, dict], quiet: bool) -> dict:
    """sha256 over each dataset's dataset_info entry, its file(s) and every image it names."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    images: list[str] = []
    for name, entry in sorted(datasets.items()):
        digest.update(json.dumps([name, entry], sort_keys=True).encode())
        if "file_name" not in entry:
            continue  # a hub or script dataset: only its entry is hashed (the manifest says so below)
        path = dataset_dir / entry["file_name"]
        for file in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if file.is_file():
                digest.update(file.read_bytes())
                if file.suffix == ".json":
                    images += _image_paths(file, entry)
    for rel in tqdm(sorted(set(images)), desc="hashing SFT images", unit="img", disable=quiet or len(images) < 200):
        image = Path(rel) if Path(rel).is_absolute() else dataset_dir / rel
        digest.update(rel.encode())
        digest.update(image.read_bytes() if image.is_file() else b"<missing>")
    remote = sorted(n for n, e in datasets.items() if "file_name" not in e)
    return {"sha256": digest.hexdigest(), "datasets": sorted(datasets), "images": len(set(images)),
            **({"not_hashed": f"{remote}: no local file, only the dataset_info entry is hashed"} if remote else {})}


def _image_paths(file: Path, entry: dict) -> list[str]:
    column = entry.get("columns", {}).get("images")
    if not column:
        return []
    try:
        rows = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise SftError(f"{file}:{err.lineno}: not valid JSON ({err.msg})") from None
    return [p for row in rows if isinstance(row, dict) for p in (row.get(column) or []) if isinstance(p, str)]


# --------------------------------------------------------------------------------------------
# the training process
# --------------------------------------------------------------------------------------------
def _losses(run_dir: Path) -> list[float]:
    """Per-step training losses from the final trainer_state.json (it carries the resumed history too)."""
    state = runs.read_json(run_dir / "trainer_state.json") or {}
    return [float(e["loss"]) for e in state.get("log_history", []) if "loss" in e]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


if __name__ == "__main__":
    raise SystemExit(main())
