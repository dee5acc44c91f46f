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
from medsage.eval.retry import TRIGGERS
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
    retry: str = "none"                # answer_key: a second attempt for wrong answers (medsage.eval.retry)
    retry_request: str | None = None   # its self-check request; null: medsage.prompts.SELF_CHECK_REQUEST, RL's default

    def __post_init__(self) -> None:
        from medsage.config import ConfigError

        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size={self.batch_size}: must be 1 or more")
        if self.retry not in TRIGGERS:
            raise ConfigError(f"eval.retry={self.retry!r}: must be one of {', '.join(TRIGGERS)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"eval.limit={self.limit}: must be 1 or more, or null for every item")

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
    _check_same_setup(predictions, fingerprint)
    rows = read_predictions(predictions, repair=True)
    if any(UNREADABLE in r for r in rows):  # an image that failed before is tried again (it may have been fixed)
        from medsage.io import atomic_write_jsonl

        rows = [r for r in rows if UNREADABLE not in r]
        atomic_write_jsonl(predictions, rows)
    done = {str(r.get("id")) for r in rows}
    todo = [s for s in samples if s.id not in done]
    predictions.parent.mkdir(parents=True, exist_ok=True)

    def lines_of(batch: list[Sample]) -> list[dict]:
        lines = []
        for s, out, problem in _generate(backend, [build_request(s, prompt) for s in batch], batch):
            line = {**item_fields(s, benchmark, group_by), "prediction": out, "model": model}
            lines.append({**line, UNREADABLE: problem} if problem else line)
        return lines

    append_batches(predictions, todo, batch_size, lines_of, desc=benchmark, total=len(samples))
    return len(todo)


def append_batches(path: Path, todo: list, batch_size: int, lines_of, *, desc: str, total: int) -> None:
    """Generate ``todo`` batch by batch (``lines_of(batch)`` returns the batch's lines), each batch appended to
    ``path`` with its seconds per item before the next starts, behind a progress bar over ``total`` items of which
    all but ``todo`` were done before. A batch on disk survives a kill before the next one."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(todo), desc=desc, unit="item")
    with path.open("a", encoding="utf-8") as fh:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            began = time.time()
            lines = lines_of(batch)
            seconds = round((time.time() - began) / len(batch), 3)
            append_jsonl(fh, [{**line, "seconds": seconds} for line in lines])
            bar.update(len(batch))
    bar.close()


# A predictions line whose item's image could not be read: no answer, scored wrong with this reason, and asked again
# on the next run (the image may have been replaced).
UNREADABLE = "unreadable_image"


def _unreadable(sample: Sample) -> str | None:
    """Why one of ``sample``'s images cannot be decoded, or None (the backends open them themselves)."""
    from PIL import Image

    for path in sample.images:
        try:
            with Image.open(path) as img:
                img.load()
        except (OSError, ValueError, SyntaxError) as err:  # PIL raises all three on bad files
            return f"{path}: {type(err).__name__}: {err}"
    return None


def _generate(backend: Backend, requests, batch: list[Sample]):
    """``(sample, output, problem)`` per item. When the batch fails and an image of it does not decode, the items
    with readable images are generated again without it and each unreadable one is named with its reason, as the
    data stages do; any other failure is the backend's and is raised."""
    try:
        outputs = backend.generate(requests)
    except Exception:
        problems = [_unreadable(s) for s in batch]
        if not any(problems):
            raise
        readable = [k for k, p in enumerate(problems) if p is None]
        outputs_of = dict(zip(readable, backend.generate([requests[k] for k in readable]) if readable else []))
        return [(s, outputs_of.get(k), problems[k]) for k, s in enumerate(batch)]
    if len(outputs) != len(batch):
        raise RuntimeError(f"backend {backend.name} returned {len(outputs)} outputs for {len(batch)} requests")
    return [(s, out, None) for s, out in zip(batch, outputs)]


def second_attempts(samples: list[Sample], backend: Backend, prompt: PromptConfig, predictions: Path,
                    verdicts_path: Path, ev: EvalConfig, benchmark: str, fingerprint: dict) -> dict:
    """``eval.retry=answer_key``: a second attempt for the wrong first answers, scored (``medsage.eval.retry``)."""
    from medsage.eval.retry import RETRY, generate_retries, score_retries
    from medsage.eval.scoring import read_predictions
    from medsage.prompts import SELF_CHECK_REQUEST

    request = ev.retry_request if ev.retry_request is not None else SELF_CHECK_REQUEST
    _check_same_setup(layout.beside(predictions, RETRY), {**fingerprint, "retry_request": request})
    ids = {s.id for s in samples}
    rows = {str(r["id"]): r for r in read_predictions(predictions) if str(r.get("id")) in ids}
    first = read_predictions(verdicts_path)
    generate_retries(first, rows, {s.id: build_request(s, prompt) for s in samples}, backend, predictions, request,
                     ev.batch_size, benchmark)
    return score_retries(predictions, first, rows)


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

    from medsage.lock import folder_lock
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
    if backend is None and ev.backend["name"] != "openai":  # an endpoint's model is a served name, not a folder
        from medsage.config import ConfigError
        from medsage.model_folder import model_folder_problem

        if problem := model_folder_problem(cfg.model.path):
            raise ConfigError(problem)
    if ev.retry != "none":  # refused before a model is loaded (minutes for vLLM), not after
        from medsage.registry import EVAL_BACKENDS

        kind = type(backend) if backend is not None else EVAL_BACKENDS.get(str(ev.backend["name"]))
        if not getattr(kind, "continues_replies", False):
            from medsage.config import ConfigError

            raise ConfigError(f"eval.retry={ev.retry}: the {kind.name} backend cannot continue a reply's start "
                              "(the retry's opened <CHECK>); use the hf or vllm backend, or eval.retry=none")
    # two runs appending to one predictions file would score each item twice
    with folder_lock(out_dir, "evaluation"):
        if backend is None:
            backend = make_backend(OmegaConf.create(ev.backend), str(cfg.model.path), generation)
        summaries = {}
        for name, (samples, group_by) in loaded.items():
            predictions = layout.predictions_file(out_dir, name, blind=ev.blind)
            fingerprint = {"model_path": str(cfg.model.path), "backend": str(ev.backend["name"]),
                           "blind": ev.blind, "prompt": asdict(prompt), "generation": asdict(generation),
                           "benchmark": {**_benchmark_options(benchmarks[name]), "path": benchmarks[name]["path"]}}
            generate_predictions(samples, backend, prompt, predictions, name, ev.batch_size, group_by,
                                 model=str(cfg.model.name), fingerprint=fingerprint)
            verdicts_path, summary_path, summary = score_predictions(predictions, ids={s.id for s in samples})
            summaries[name] = {**summary.get(name, {"benchmark": name, "n": 0}), "data": data_files[name]}
            if ev.retry == "answer_key" and not ev.blind:
                summaries[name]["self_correction"] = second_attempts(
                    samples, backend, prompt, predictions, verdicts_path, ev, name, fingerprint)
                atomic_write_json(summary_path, {**summary, name: {**summary.get(name, {}),
                                                                   "self_correction": summaries[name]["self_correction"]}})
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
