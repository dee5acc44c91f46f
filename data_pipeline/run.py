"""``medsage data run``: raw sources -> kept records -> dedup -> SFT / RL files, resumable at any point.

Steps, top to bottom:

1. ingest: each source's inputs in shards of ``shard_size``; a shard writes its records and rejections
   atomically, then a ``.done`` marker holding a fingerprint of everything that decides its bytes
   (source, options, filter/question/RoI settings, seed, the shard's input keys, and each input's
   stamp: its raw annotation and the size and mtime of the files it reads). A rerun skips every
   shard whose marker matches, so killed work is redone only for the shard in flight, and a fixed
   CSV row or a replaced image is read again.
2. dedup: pHash of every kept training image (hash shards cached the same way) against the
   evaluation folders and within the pool; records whose image is removed become rejections.
3. write: ``records.jsonl`` (kept), ``rejected.jsonl`` (every rejection with its reason),
   LLaVA SFT for records that already carry a trajectory, verl parquet and EasyR1 files for RL, and
   ``summary.json`` whose counts reconcile: per source, inputs = kept + rejected.

All randomness is seeded from item keys and the merges are in input order, so an interrupted run
rerun with the same command ends with the same bytes as an uninterrupted one. The output folder is
locked for the run (``medsage.lock``): a second run into it stops at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medsage.data_pipeline import layout
from medsage.data_pipeline.dedup import DedupConfig
from medsage.data_pipeline.quality import QualityConfig
from medsage.data_pipeline.questions import QuestionConfig
from medsage.data_pipeline.rois import RoIConfig
from medsage.prompts import PromptConfig
from medsage.records import Sample, read_records, write_records

# Test hook: seconds to sleep after each finished ingest shard, so a test can kill a run mid-way.
PAUSE_ENV = "MEDSAGE_DATA_PAUSE_AFTER_SHARD"


@dataclass
class SourceSpec:
    """One source of the run: a registered adapter name, its folder, and adapter options."""

    name: str
    root: str
    options: dict = field(default_factory=dict)

    def option_problem(self) -> str | None:
        """Why the adapter cannot take ``options`` (naming the options it does take), or None. Checked before
        any source is read: the adapter's constructor would otherwise fail with a bare TypeError."""
        import difflib
        import inspect

        from medsage.registry import SOURCES

        params = list(inspect.signature(SOURCES.get(self.name)).parameters.values())[2:]  # after root, image_dir
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        takes = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in self.options if k not in takes]
        if not unknown:
            return None
        close = {k: difflib.get_close_matches(k, takes, n=1) for k in unknown}
        hints = "".join(f"; did you mean {c[0]!r} for {k!r}?" for k, c in close.items() if c)
        return (f"source {self.name!r} takes no option {', '.join(map(repr, unknown))}{hints} "
                f"(its options: {', '.join(takes) or 'none'})")


@dataclass
class WriteConfig:
    """Which training files the run writes."""

    sft_name: str = "sage_sft"  # LLaMA-Factory dataset name (records with a trajectory only)
    verl: bool = True  # rl/verl.parquet
    easyr1: bool = True  # rl/easyr1.<format>
    easyr1_format: str = "jsonl"  # jsonl | parquet
    easyr1_prompt_key: str = "problem"
    easyr1_answer_key: str = "answer"
    easyr1_image_key: str = "images"
    embed_images: bool = False  # image bytes inside the parquet files (self-contained for a cluster)

    def __post_init__(self) -> None:
        check_name(self.sft_name, "write.sft_name")


def check_name(name: str, what: str) -> str:
    """A name that becomes a file or folder name: one plain component, so nothing lands outside out_dir."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", name):
        raise ValueError(f"{what} {name!r} must be a plain name (letters, digits, _ . -), not a path")
    return name


@dataclass
class RunConfig:
    """Everything ``medsage data run`` needs; built from the recipe (recipes/data/)."""

    out_dir: str
    sources: list[SourceSpec]
    shard_size: int = 500
    seed: int = 0
    quality: QualityConfig = field(default_factory=QualityConfig)
    questions: QuestionConfig = field(default_factory=QuestionConfig)
    rois: RoIConfig = field(default_factory=RoIConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig.load)  # recipes/prompt/: the SFT and RL human turn

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("a data run needs at least one source")
        for i, spec in enumerate(self.sources):
            if problem := spec.option_problem():
                raise ValueError(f"sources.{i}.options: {problem}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")

    @classmethod
    def from_dict(cls, d, where: str = "data recipe") -> "RunConfig":
        """From a composed recipe (dict or DictConfig), typed by OmegaConf (``medsage.config.typed``)."""
        from medsage.config import typed

        return typed(cls, d, where)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Step 1: ingest in shards
# --------------------------------------------------------------------------------------------


def ingest_source(spec: SourceSpec, cfg: RunConfig, out: Path) -> tuple[str, list[Path], int, int]:
    """Ingest one source shard by shard; returns (source name, this run's shard stems, computed, reused)."""
    from tqdm import tqdm

    from medsage.data_pipeline.sources.base import build_samples, input_stamp
    from medsage.io import atomic_write_json, atomic_write_jsonl
    from medsage.registry import SOURCES

    adapter = SOURCES.get(spec.name)(spec.root, out / "images", **spec.options)
    check_name(adapter.name, f"source {spec.name}: name")
    if hasattr(adapter, "max_pixels"):  # adapters that decode images themselves
        adapter.max_pixels = cfg.quality.max_pixels
    keys = adapter.inputs()
    shard_dir = out / "steps" / "ingest" / adapter.name
    settings = (asdict(spec), asdict(cfg.quality), asdict(cfg.questions), asdict(cfg.rois), cfg.seed)
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    computed = reused = 0
    stems = []
    n_shards = (len(keys) + cfg.shard_size - 1) // cfg.shard_size
    for shard in tqdm(range(n_shards), desc=f"ingest {adapter.name}", unit="shard"):
        start = shard * cfg.shard_size
        shard_keys = keys[start:start + cfg.shard_size]
        stem = shard_dir / f"shard-{shard:05d}"
        marker = stem.with_suffix(".done")
        stems.append(stem)
        fingerprint = _fingerprint(settings, [(key, input_stamp(adapter, key)) for key in shard_keys])
        if marker.exists() and json.loads(marker.read_text()).get("fingerprint") == fingerprint:
            reused += 1
            continue
        records, rejections = [], []
        for offset, key in enumerate(shard_keys):
            try:
                samples, rejection = build_samples(adapter, key, start + offset, quality=cfg.quality,
                                                   questions=cfg.questions, rois=cfg.rois, seed=cfg.seed,
                                                   image_dir=out / "images")
            except Exception as err:  # a bug or an unforeseen input: stop, naming the input (finished shards stay)
                raise RuntimeError(f"{adapter.name} input {key!r} (root {spec.root}): "
                                   f"{type(err).__name__}: {err}") from err
            records += [s.to_dict() for s in samples]
            if rejection:
                rejections.append(rejection.to_dict())
        atomic_write_jsonl(layout.shard_file(stem, layout.RECORDS), records)
        atomic_write_jsonl(layout.shard_file(stem, layout.REJECTED), rejections)
        atomic_write_json(marker, {"fingerprint": fingerprint, "inputs": len(shard_keys), "records": len(records),
                                   "rejected": len(rejections)})
        computed += 1
        if pause:
            time.sleep(pause)
    # Shards left by an earlier run with another shard size are stale: only this run's stems are merged.
    return adapter.name, stems, computed, reused


def _merge_source(stems: list[Path]) -> tuple[list[Sample], list[dict], int]:
    samples, rejections, inputs = [], [], 0
    for stem in stems:
        inputs += json.loads(stem.with_suffix(".done").read_text())["inputs"]
        samples += list(read_records(layout.shard_file(stem, layout.RECORDS)))
        text = layout.shard_file(stem, layout.REJECTED).read_text()
        rejections += [json.loads(line) for line in text.splitlines() if line.strip()]
    return samples, rejections, inputs


# --------------------------------------------------------------------------------------------
# Step 2: dedup
# --------------------------------------------------------------------------------------------


def dedup_records(samples: list[Sample], cfg: RunConfig, out: Path) -> tuple[list[Sample], list[dict], dict]:
    """Drop records whose image leaks an eval image or duplicates an earlier training image."""
    from medsage.data_pipeline.dedup import dedup, hash_in_shards, write_report
    from medsage.data_pipeline.eval_images import collect_eval_images

    if not cfg.dedup.eval_dirs and not cfg.dedup.within_train:
        return samples, [], {"skipped": "no eval_dirs and within_train off"}
    cache = out / "steps" / "dedup"
    train_paths = sorted({p for s in samples for p in s.images})
    eval_paths = collect_eval_images(cfg.dedup.eval_dirs, cache / "eval_parquet_images")
    train = hash_in_shards(train_paths, cache, "train", cfg.dedup)
    evals = hash_in_shards(eval_paths, cache, "eval", cfg.dedup)
    result = dedup(train, evals, cfg.dedup)
    summary = write_report(out / "dedup", result, cfg.dedup, n_eval=sum(h is not None for h in evals.values()))
    removed = {r["image"]: r for r in result.removed}
    kept, rejected = [], []
    for s in samples:
        hit = next((removed[p] for p in s.images if p in removed), None)
        if hit is None:
            kept.append(s)
        else:
            rejected.append({"source": s.source, "key": s.metadata.get("input_key", s.id),
                             "reason": f"dedup-{hit['reason']}", "images": s.images,
                             "detail": f"{hit['image']} ~ {hit['nearest']} ({hit['distance']} bits)"})
    return kept, rejected, summary


# --------------------------------------------------------------------------------------------
# Step 3: write
# --------------------------------------------------------------------------------------------


def write_outputs(samples: list[Sample], cfg: WriteConfig, out: Path, prompt: PromptConfig) -> dict:
    """SFT (records with a trajectory), verl parquet and EasyR1 files; returns what was written."""
    from medsage.data_pipeline.writers import write_easyr1, write_llava_sft, write_verl_parquet

    written: dict = {}
    with_trajectory = [s for s in samples if s.trajectory is not None]
    if with_trajectory:
        written["sft"] = str(write_llava_sft(with_trajectory, out / layout.SFT_DIR, cfg.sft_name, prompt))
    written["sft_examples"] = len(with_trajectory)
    if samples and cfg.verl:
        written["verl"] = str(write_verl_parquet(samples, out / layout.RL_DIR / layout.VERL_FILE,
                                                 prompt=prompt, embed_images=cfg.embed_images))
    if samples and cfg.easyr1:
        written["easyr1"] = str(write_easyr1(
            samples, out / layout.RL_DIR / f"easyr1.{cfg.easyr1_format}", fmt=cfg.easyr1_format, prompt=prompt,
            prompt_key=cfg.easyr1_prompt_key, answer_key=cfg.easyr1_answer_key, image_key=cfg.easyr1_image_key,
            embed_images=cfg.embed_images))
    written["rl_rows"] = len(samples)
    return written


def run(cfg: RunConfig) -> dict:
    """The whole data run; returns the summary also written to ``<out_dir>/summary.json``."""
    from medsage.lock import folder_lock

    with folder_lock(cfg.out_dir, "data run"):
        return _run(cfg)


def _run(cfg: RunConfig) -> dict:
    from medsage.io import atomic_write_json, atomic_write_jsonl

    out = Path(cfg.out_dir).resolve()
    for stale in out.rglob(".*.tmp"):  # a write cut by kill -9 (medsage.io names temp files .<name>.*.tmp)
        stale.unlink()
    kept: list[Sample] = []
    rejected: list[dict] = []
    per_source: dict[str, dict] = {}
    shards: dict[str, list[Path]] = {}
    for spec in cfg.sources:
        name, stems, computed, reused = ingest_source(spec, cfg, out)
        if name in shards:
            raise ValueError(f"two sources are named {name!r}: give one of them options.name")
        shards[name] = stems
        print(f"ingest {name}: {computed} shard(s) computed, {reused} reused", flush=True)
    names = list(shards)
    for name, stems in shards.items():
        samples, rejections, inputs = _merge_source(stems)
        kept += samples
        rejected += rejections
        per_source[name] = {"inputs": inputs}

    kept, dedup_rejected, dedup_summary = dedup_records(kept, cfg, out)
    rejected += dedup_rejected

    for name in names:
        reasons = Counter(r["reason"] for r in rejected if r["source"] == name)
        entry = per_source[name]
        entry.update(kept=sum(s.source == name for s in kept), rejected=sum(reasons.values()),
                     rejected_by_reason=dict(sorted(reasons.items())))
        # One record per input: every input is exactly one kept record or one rejection.
        if entry["kept"] + entry["rejected"] != entry["inputs"]:
            raise RuntimeError(f"{name}: counts do not reconcile: {entry}")

    write_records(out / layout.RECORDS, kept)
    atomic_write_jsonl(out / layout.REJECTED, rejected)
    written = write_outputs(kept, cfg.write, out, cfg.prompt)
    question_types = Counter(s.question_type for s in kept)
    kinds = Counter(str(s.metadata.get("question_kind")) for s in kept)
    summary = {"sources": per_source, "kept": len(kept), "rejected": len(rejected),
               "question_types": dict(sorted(question_types.items())), "question_kinds": dict(sorted(kinds.items())),
               "short_qa": _short_qa_counts(kept, rejected),
               "dedup": dedup_summary,
               "written": {k: (os.path.relpath(v, out) if isinstance(v, str) else v) for k, v in written.items()}}
    atomic_write_json(out / layout.SUMMARY, summary)
    _plot_counts(out / "summary.png", per_source)
    return summary


def _short_qa_counts(kept: list[Sample], rejected: list[dict]) -> dict:
    """Per source whose captions became short questions: records each rule produced, inputs dropped."""
    from medsage.data_pipeline.short_qa import NoShortQA

    out: dict[str, dict] = {}
    for s in kept:
        if rule := (s.metadata.get("short_qa") or {}).get("rule"):
            entry = out.setdefault(s.source, {"produced": Counter(), "dropped": 0})
            entry["produced"][rule] += 1
    for r in rejected:
        if r["reason"] == NoShortQA.reason:
            out.setdefault(r["source"], {"produced": Counter(), "dropped": 0})["dropped"] += 1
    return {src: {"produced": dict(sorted(e["produced"].items())), "dropped": e["dropped"]}
            for src, e in sorted(out.items())}


def _plot_counts(path: Path, per_source: dict[str, dict]) -> None:
    """Kept and rejected inputs per source, rejections split by reason (stacked bars)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsage.io import atomic_write_bytes

    names = list(per_source)
    reasons = sorted({r for e in per_source.values() for r in e["rejected_by_reason"]})
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 3, 3.5))
    bottom = [0] * len(names)
    for label in ["kept", *reasons]:
        heights = [e["kept"] if label == "kept" else e["rejected_by_reason"].get(label, 0) for e in per_source.values()]
        ax.bar(names, heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_ylabel("source inputs")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
