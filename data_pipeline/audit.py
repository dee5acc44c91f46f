"""``medsage data audit``: near-duplicate images between what a model trains on and what it is tested on.

Two checks, each written as pairs with their pHash distance (``pairs.jsonl``) and counted in
``summary.json``:
- ``<benchmark>: train vs <split>``: every image of a benchmark's evaluation split against its own
  train split (published audits find about one SLAKE-en test image in five has a near-duplicate in
  the train split);
- ``<training set> vs <benchmark>``: every image of each benchmark's evaluation split against a
  training set (a medsage ``records.jsonl``, its kept records' images, or a folder of images).
A pair is an evaluation image and its nearest image on the other side when they are within
``threshold`` bits (the dedup threshold, 10 by default). Hashing and the nearest-image search are
``medsage.data_pipeline.dedup``'s; images embedded in parquet are read by the benchmark loaders.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from medsage.data_pipeline.dedup import DedupConfig, hash_in_shards, list_images, nearest, pack


def benchmark_images(root: str | Path, groups: tuple[str, ...], image_cache: Path) -> dict[str, dict[str, dict]]:
    """``{benchmark: {split: {image: [item ids]}}}`` for the recipe split and a train split when present."""
    from omegaconf import OmegaConf

    from medsage.eval.benchmarks.base import BenchmarkDataError, MissingDataError, SplitSizeWarning
    from medsage.recipes import compose
    from medsage.registry import BENCHMARKS

    found: dict[str, dict[str, dict]] = {}
    for group in groups:
        cfg = compose("eval", [f"eval.data_root={Path(root).resolve()}", f"eval/benchmarks={group}"])
        for name, spec in OmegaConf.to_container(cfg.eval.benchmarks, resolve=True).items():
            if not Path(spec["path"]).exists():
                continue
            cls = BENCHMARKS.get(name)
            options = {k: v for k, v in spec.items() if k not in ("path", "limit", "split")}
            wanted = spec.get("split") or cls.info.default_split
            for split in dict.fromkeys([wanted, "train"]):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", SplitSizeWarning)
                        samples = cls(spec["path"], split=split, image_cache=image_cache / name, strict=False,
                                      **options).load()
                except (MissingDataError, BenchmarkDataError):
                    if split == wanted:
                        raise
                    continue  # this release has no train split
                images: dict[str, list[str]] = {}
                for s in samples:
                    for p in s.images:
                        images.setdefault(p, []).append(s.id)
                found.setdefault(name, {})[split] = images
    return found


def training_images(path: str | Path) -> list[str]:
    """The images of a training set: a records file's kept records, or every image under a folder."""
    from medsage.records import read_records

    path = Path(path)
    if path.is_file():
        return sorted({p for s in read_records(path) if s.kept for p in s.images})
    return list_images([path])


def near_pairs(query: dict[str, int | None], reference: dict[str, int | None], threshold: int) -> list[tuple]:
    """``(query image, nearest reference image, distance)`` for each query image within ``threshold``."""
    q = sorted(p for p, h in query.items() if h is not None)
    r = sorted(p for p, h in reference.items() if h is not None)
    if not q or not r:
        return []
    idx, dist = nearest(pack([query[p] for p in q]), pack([reference[p] for p in r]))
    return [(q[k], r[int(i)], int(d)) for k, (i, d) in enumerate(zip(idx.tolist(), dist.tolist())) if d <= threshold]


def audit(eval_root: str | Path, out_dir: str | Path, training: list[str | Path] = (),
          groups: tuple[str, ...] = ("paper_five",), cfg: DedupConfig | None = None) -> dict:
    """Run both checks; write ``pairs.jsonl`` and ``summary.json`` under ``out_dir`` (atomically)."""
    from medsage.data_pipeline import layout
    from medsage.io import atomic_write_json, atomic_write_jsonl

    cfg = cfg or DedupConfig()
    out = Path(out_dir)
    cache = out / ".hashes"
    benches = benchmark_images(eval_root, groups, out / ".images")
    hashes = {}

    def hashed(label: str, paths: list[str]) -> dict[str, int | None]:
        if label not in hashes:
            hashes[label] = hash_in_shards(sorted(paths), cache, label.replace("/", "_").replace(" ", "_"), cfg)
        return hashes[label]

    checks, pairs = {}, []

    def check(name: str, benchmark: str, eval_split: str, eval_images: dict, other_label: str, other: list[str]):
        found = near_pairs(hashed(f"{benchmark}-{eval_split}", list(eval_images)), hashed(other_label, other),
                           cfg.threshold)
        for image, match, distance in found:
            pairs.append({"check": name, "benchmark": benchmark, "split": eval_split, "eval_image": image,
                          "eval_ids": eval_images[image], "match_image": match, "distance": distance})
        n = len(eval_images)
        checks[name] = {"eval_images": n, "against_images": len(other), "with_near_duplicate": len(found),
                        "fraction": round(len(found) / n, 4) if n else None}

    for name, splits in benches.items():
        eval_split = next(s for s in splits if s != "train") if len(splits) > 1 else next(iter(splits))
        if "train" in splits and eval_split != "train":
            check(f"{name}: train vs {eval_split}", name, eval_split, splits[eval_split], f"{name}-train",
                  list(splits["train"]))
    for train_path in training:
        images = training_images(train_path)
        for name, splits in benches.items():
            eval_split = next((s for s in splits if s != "train"), None)
            if eval_split:
                check(f"{train_path} vs {name} {eval_split}", name, eval_split, splits[eval_split],
                      f"train-{Path(train_path).name}", images)
    summary = {"threshold_bits": cfg.threshold, "benchmarks": sorted(benches), "checks": checks}
    atomic_write_jsonl(out / layout.AUDIT_PAIRS, pairs)
    atomic_write_json(out / layout.SUMMARY, summary)
    return summary
