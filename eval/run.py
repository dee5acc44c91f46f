"""``medsage eval run``: load benchmarks -> prompt -> backend, batched with a progress bar -> score.

Reads top to bottom: ``evaluate(cfg)`` takes the composed recipe (``recipes/eval.yaml``) and, per
benchmark, loads the items, skips the ids already in its predictions file (an interrupted run
resumes), generates the rest batch by batch (each batch appended and fsynced before the next
starts), then scores everything into per-item verdicts and a summary. ``run.json`` records what was
run, for ``medsage report``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medsage.eval import layout
from medsage.eval.backends.base import Backend, GenerationConfig, make_backend
from medsage.eval.prompting import PromptConfig, build_request
from medsage.eval.scoring import item_fields, read_predictions, score_predictions
from medsage.io import append_jsonl, atomic_write_json
from medsage.records import Sample


@dataclass
class EvalConfig:
    """The ``eval`` section of recipes/eval.yaml, typed (``medsage.config.typed``). The prompt and the judge
    are typed on their own: the top-level ``prompt`` group (``PromptConfig``, which ``from_recipe`` returns
    beside) and ``eval.judge`` (``JudgeConfig``, typed by ``medsage eval judge``; ``eval run`` never calls it)."""

    data_root: str                     # folder holding one sub-folder per benchmark
    label: str                         # row name in reports
    output_dir: str                    # predictions, verdicts, summaries and run.json land here
    benchmarks: dict[str, Any]         # name -> {path, limit, split, ...} (the benchmark's own options)
    backend: dict[str, Any]            # {name: <medsage.eval_backends entry>, ...that backend's fields}
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    image_cache: str | None = None
    batch_size: int = 8
    limit: int | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    blind: bool = False                # every image blank: the blind baseline (medsage.eval.blind)

    @classmethod
    def from_recipe(cls, cfg) -> tuple["EvalConfig", PromptConfig]:
        from omegaconf import OmegaConf

        from medsage.config import typed

        section = OmegaConf.to_container(cfg.eval, resolve=True)
        section.pop("judge", None)
        # The prompt is the top-level `prompt` group (recipes/prompt/), shared with the SFT and RL writers.
        prompt = PromptConfig.from_cfg(cfg.prompt)
        return typed(cls, section, "recipes/eval.yaml", prefix="eval."), prompt


def generate_predictions(samples: list[Sample], backend: Backend, prompt: PromptConfig, predictions: Path,
                         benchmark: str, batch_size: int, group_by: str | None = None,
                         model: str | None = None, fingerprint: dict | None = None) -> int:
    """Append predictions for the samples not yet in ``predictions``; return how many were generated."""
    from tqdm import tqdm

    _check_same_setup(predictions, fingerprint)
    done = {str(r.get("id")) for r in read_predictions(predictions, repair=True)}
    todo = [s for s in samples if s.id not in done]
    predictions.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(samples), initial=len(samples) - len(todo), desc=f"{benchmark}", unit="item")
    with predictions.open("a", encoding="utf-8") as fh:  # a batch on disk survives a kill before the next one
        for start in range(0, len(todo), max(1, batch_size)):
            batch = todo[start:start + batch_size]
            began = time.time()
            outputs = backend.generate([build_request(s, prompt) for s in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"backend {backend.name} returned {len(outputs)} outputs for {len(batch)} requests")
            seconds = round((time.time() - began) / len(batch), 3)
            append_jsonl(fh, [{**item_fields(s, benchmark, group_by), "prediction": out, "model": model,
                               "seconds": seconds} for s, out in zip(batch, outputs)])
            bar.update(len(batch))
    bar.close()
    return len(todo)


def _check_same_setup(predictions: Path, fingerprint: dict | None) -> None:
    """Resuming is only sound with the same model, prompt and decoding; otherwise refuse, loudly."""
    if fingerprint is None:
        return
    meta = layout.beside(predictions, "setup.json")
    if meta.exists() and predictions.exists():
        before = json.loads(meta.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(before) | set(fingerprint) if before.get(k) != fingerprint.get(k))
        if changed:
            raise RuntimeError(f"{predictions} was made with a different {', '.join(changed)}; resuming would mix "
                               f"two setups in one score. Use another eval.output_dir or delete the file.")
    else:
        atomic_write_json(meta, fingerprint)


def _benchmark_options(spec) -> dict:
    return {k: v for k, v in dict(spec).items() if k not in ("path", "limit")}


def evaluate(cfg, backend: Backend | None = None) -> dict:
    """Run every benchmark of ``cfg.eval.benchmarks``; return ``{benchmark: summary}``."""
    from omegaconf import OmegaConf

    from medsage.registry import BENCHMARKS

    ev, prompt = EvalConfig.from_recipe(cfg)
    out_dir = Path(ev.output_dir)
    generation, benchmarks = ev.generation, ev.benchmarks
    if not benchmarks:
        raise ValueError("eval.benchmarks is empty: pick a set with eval/benchmarks=<name> or add one")
    # Load every benchmark first: a missing dataset fails before any model is loaded.
    loaded: dict[str, tuple[list[Sample], str | None]] = {}
    data_files: dict[str, dict] = {}  # which files and layout each benchmark was read from (e.g. PMC-VQA's csv)
    for name, spec in benchmarks.items():
        bench = BENCHMARKS.get(name)(spec["path"], image_cache=ev.image_cache, **_benchmark_options(spec))
        samples = bench.load()
        data_files[name] = {"split": bench.split, "layout": bench.layout, "files": bench.files_read, **bench.stats}
        limit = spec.get("limit", ev.limit)
        loaded[name] = (samples[:limit] if limit else samples, bench.info.group_by)
    if ev.blind:  # the blind baseline: same items, every image blank
        from medsage.eval.blind import blind_samples
        from medsage.runtime import cache_root

        blank_dir = Path(ev.image_cache or cache_root() / "images") / "blank"
        loaded = {n: (blind_samples(s, blank_dir), g) for n, (s, g) in loaded.items()}
    if backend is None:
        backend = make_backend(OmegaConf.create(ev.backend), str(cfg.model.path), generation)
    summaries = {}
    for name, (samples, group_by) in loaded.items():
        predictions = layout.predictions_file(out_dir, name, blind=ev.blind)
        fingerprint = {"model_path": str(cfg.model.path), "backend": str(ev.backend["name"]), "blind": ev.blind,
                       "prompt": asdict(prompt), "generation": asdict(generation),
                       "benchmark": {**_benchmark_options(benchmarks[name]), "path": benchmarks[name]["path"]}}
        generate_predictions(samples, backend, prompt, predictions, name, ev.batch_size, group_by,
                             model=str(cfg.model.name), fingerprint=fingerprint)
        _, _, summary = score_predictions(predictions)
        summaries[name] = {**summary.get(name, {"benchmark": name, "n": 0}), "data": data_files[name]}
    # A blind run and a sighted run of one model into the same folder keep each other's summaries.
    before = json.loads((out_dir / layout.RUN).read_text()) if (out_dir / layout.RUN).exists() else {}
    before = before if before.get("model_path") == str(cfg.model.path) else {}
    atomic_write_json(out_dir / layout.RUN, {
        **before,
        "label": ev.label, "model": str(cfg.model.name), "model_path": str(cfg.model.path),
        "backend": str(ev.backend["name"]), "tags": ev.tags, "generation": asdict(generation),
        "blind_summaries" if ev.blind else "summaries": summaries,
        "data_files": {**before.get("data_files", {}), **data_files},
    })
    return summaries
