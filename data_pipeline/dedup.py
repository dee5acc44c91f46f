"""pHash dedup: no training image may be a copy of an evaluation image, nor of another training image.

Every image is hashed with ``imagehash.phash`` (64 bits: the signs of the low 8x8 DCT block of a
32x32 grey thumbnail) by one pool of processes, streamed into shards written atomically, so an
interrupted run resumes without rehashing; a cached hash is reused only while its file's size,
mtime, ctime and inode are unchanged (a replaced image is hashed again). The searches are
``near_duplicates``' (faiss-cpu's exact binary index; numpy without faiss).

A training image is removed when its nearest evaluation image is within ``threshold`` bits
(``eval-leak``), or, with ``within_train``, when an earlier kept training image is (``train-duplicate``;
earlier = sorted path order, so the choice is the same on every run).

Why the default threshold is 10 bits (measured by ``python bench/bench_dedup.py --thresholds`` on 60
CT-like generated slices): resizing (50%, 150%), JPEG re-encoding (q60) and grey-level shifts move a
pHash by at most 2 bits, brightness x1.25 by at most 6, a crop of 2.5% on each side by at most 10
(mean 5); distinct slices, which look alike, sit at 10 or more (1st percentile 14, mean 26).
10 catches every copy of that list; a larger crop (5% off one side: up to 14) needs a higher
threshold, at the price of removing distinct look-alike images. For a leakage filter a lost training
image is cheaper than a leaked eval image, so the default leans to removing.
"""

from __future__ import annotations

import json
import os
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from medsage.data_pipeline.near_duplicates import near_pairs_within, nearest, pack

DEFAULT_THRESHOLD = 10
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
_ELEMENTS_PER_CHUNK = 1 << 23  # ~64 MB of uint64 distances per chunk


@dataclass
class DedupConfig:
    """Options of ``medsage data dedup`` and of the run's dedup step."""

    threshold: int = DEFAULT_THRESHOLD  # max Hamming distance (bits of 64) that counts as a copy; see module doc
    within_train: bool = True  # also remove near-duplicates inside the training pool
    workers: int | None = None  # hashing processes; None = all CPU cores
    shard_size: int = 2000  # images per hash shard (a shard is the unit of resume)
    eval_dirs: list[str] = field(default_factory=list)  # folders of evaluation images to protect
    max_pixels: int = 100_000_000  # larger images are not decoded (named on stderr, unreadable: see medsage.images)

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 64:
            raise ValueError(f"threshold must be 0..64 bits, got {self.threshold}")


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def phash_file(path: str, max_pixels: int = 100_000_000) -> int | None:
    """The 64-bit pHash of an image as an int, or ``None`` when the file cannot be read."""
    import sys

    import imagehash

    from medsage.images import ImageTooLarge, open_image

    try:
        with open_image(path, max_pixels) as img:
            return int(str(imagehash.phash(img)), 16)
    except ImageTooLarge as err:  # a decompression bomb: named, not decoded, and the run goes on
        print(f"medsage dedup: not hashed: {err}", file=sys.stderr, flush=True)
        return None
    except (OSError, ValueError, SyntaxError):
        return None


def iter_hashes(paths: list[str], workers: int | None = None, desc: str = "hashing",
                max_pixels: int = 100_000_000) -> Iterator[int | None]:
    """pHash of every path in order, streamed as they finish, across ``workers`` processes (1 = here).

    One pool serves the whole list (started once, not per shard); images go to it a few at a time so
    every core stays busy to the last image.
    """
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(paths), desc=desc, unit="img", leave=False) as bar:
        if workers <= 1 or len(paths) < 2 * workers:
            for p in paths:
                yield phash_file(p, max_pixels=max_pixels)
                bar.update()
            return
        from concurrent.futures import ProcessPoolExecutor

        import imagehash  # noqa: F401  imported once here: forked workers inherit it instead of each importing scipy
        chunksize = max(1, min(16, len(paths) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for h in pool.map(partial(phash_file, max_pixels=max_pixels), paths, chunksize=chunksize):
                yield h
                bar.update()


def hash_files(paths: list[str], workers: int | None = None, desc: str = "hashing") -> list[int | None]:
    """pHash of every path, across ``workers`` processes (1 = in this process), with a progress bar."""
    return list(iter_hashes(paths, workers, desc))


def file_stamp(path: str) -> list[int] | None:
    """What identifies a file's content without reading it: size, mtime, ctime and inode (None: missing).

    ctime and the inode change on every rewrite, copy or rename onto the path, even when a copy
    keeps the old mtime and size (``cp -p``), so a replaced image is never served its old hash.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def hash_in_shards(paths: list[str], cache_dir: Path, prefix: str, cfg: DedupConfig) -> dict[str, int | None]:
    """Hash ``paths``, reusing every cached hash whose file stamp still matches (see ``file_stamp``).

    The cache is shard files of ``shard_size`` paths (``<prefix>-NNNNN.json``), each written
    atomically as soon as its last image is hashed, so an interrupted run resumes where it stopped.
    """
    from medsage.io import atomic_write_json

    size = cfg.shard_size
    cached: dict[str, tuple[list[int], int | None]] = {}
    shards: dict[str, dict] = {}
    for shard in sorted(cache_dir.glob(f"{prefix}-*.json")):
        try:
            shards[shard.name] = old = json.loads(shard.read_text())
            cached.update((p, (s, h)) for p, s, h in zip(old["paths"], old["stamps"], old["hashes"]))
        except (ValueError, KeyError, TypeError):
            continue  # unreadable or from an older layout: its images are hashed again
    stamps = [file_stamp(p) for p in paths]
    out = {p: cached[p][1] for p, s in zip(paths, stamps) if s is not None and p in cached and cached[p][0] == s}
    todo = [p for p in paths if p not in out]
    pending = [0] * -(-len(paths) // size)
    for k, p in enumerate(paths):
        pending[k // size] += p not in out

    def write(k: int) -> None:
        chunk = paths[k * size:(k + 1) * size]
        data = {"paths": chunk, "stamps": stamps[k * size:(k + 1) * size], "hashes": [out[p] for p in chunk]}
        if shards.get(f"{prefix}-{k:05d}.json") != data:
            atomic_write_json(cache_dir / f"{prefix}-{k:05d}.json", data)

    for k, n in enumerate(pending):
        if not n:
            write(k)  # all reused: rewritten only when the path list moved them to another shard
    position = {p: k for k, p in enumerate(paths)}
    for p, h in zip(todo, iter_hashes(todo, cfg.workers, desc=f"{prefix} hashes", max_pixels=cfg.max_pixels)):
        out[p] = h
        k = position[p] // size
        pending[k] -= 1
        if not pending[k]:
            write(k)
    for stale in cache_dir.glob(f"{prefix}-*.json"):
        if not stale.stem.rsplit("-", 1)[1].isdigit() or int(stale.stem.rsplit("-", 1)[1]) >= len(pending):
            stale.unlink()
    return {p: out[p] for p in paths}


# --------------------------------------------------------------------------------------------
# Dedup
# --------------------------------------------------------------------------------------------


@dataclass
class DedupResult:
    kept: list[str]
    removed: list[dict]  # {image, reason, nearest, distance}
    nearest_eval_distance: dict[str, int]  # every readable train image -> bits to its nearest eval image


def dedup(train: dict[str, int | None], evals: dict[str, int | None], cfg: DedupConfig) -> DedupResult:
    """Decide which training images stay. ``train``/``evals`` map image path -> pHash (None = unreadable)."""
    train_paths = sorted(train)
    readable = [p for p in train_paths if train[p] is not None]
    eval_paths = sorted(p for p in evals if evals[p] is not None)
    removed: dict[str, dict] = {p: {"image": p, "reason": "unreadable-image", "nearest": None, "distance": None}
                                for p in train_paths if train[p] is None}
    train_hashes, eval_hashes = pack([train[p] for p in readable]), pack([evals[p] for p in eval_paths])
    # One exact 1-NN pass: the leaks, and every image's distance for the report's histogram.
    idx, dist = nearest(train_hashes, eval_hashes)
    nearest_eval = dict(zip(readable, dist.tolist())) if eval_paths else {}
    for k in (dist <= cfg.threshold).nonzero()[0].tolist() if eval_paths else []:
        removed[readable[k]] = {"image": readable[k], "reason": "eval-leak", "nearest": eval_paths[idx[k]],
                                "distance": int(dist[k])}
    if cfg.within_train:
        kept_so_far: set[int] = set()
        pairs = near_pairs_within(train_hashes, cfg.threshold)
        for k, p in enumerate(readable):
            if p in removed:
                continue
            match = min(((d, j) for j, d in pairs.get(k, []) if j in kept_so_far), default=None)
            if match is not None:
                removed[p] = {"image": p, "reason": "train-duplicate", "nearest": readable[match[1]],
                              "distance": match[0]}
            else:
                kept_so_far.add(k)
    return DedupResult(kept=[p for p in train_paths if p not in removed],
                       removed=[removed[p] for p in train_paths if p in removed], nearest_eval_distance=nearest_eval)


def list_images(folders: list[str | Path]) -> list[str]:
    """Every image file under ``folders`` (recursively), as sorted absolute paths."""
    found = set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
        found.update(str(p.resolve()) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    return sorted(found)


def write_report(out_dir: Path, result: DedupResult, cfg: DedupConfig, n_eval: int) -> dict:
    """``kept.txt``, ``removed.jsonl`` (with nearest image and distance), ``summary.json`` and a histogram PNG."""
    from collections import Counter

    from medsage.data_pipeline import layout
    from medsage.io import atomic_write_json, atomic_write_jsonl, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / layout.DEDUP_KEPT, "".join(p + "\n" for p in result.kept))
    atomic_write_jsonl(out_dir / layout.DEDUP_REMOVED, result.removed)
    summary = {
        "threshold_bits": cfg.threshold, "within_train": cfg.within_train, "eval_images": n_eval,
        "train_images": len(result.kept) + len(result.removed), "kept": len(result.kept),
        "removed": len(result.removed),
        "removed_by_reason": dict(sorted(Counter(r["reason"] for r in result.removed).items())),
    }
    atomic_write_json(out_dir / layout.SUMMARY, summary)
    if result.nearest_eval_distance:
        _plot(out_dir / "nearest_eval_distance.png", list(result.nearest_eval_distance.values()), cfg.threshold)
    return summary


def _plot(path: Path, distances: list[int], threshold: int) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medsage.io import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(distances, bins=range(0, 66), color="#4477aa")
    ax.axvline(threshold + 0.5, color="#cc3311", linestyle="--", label=f"threshold {threshold} bits")
    ax.set_xlabel("pHash distance to the nearest evaluation image (bits)")
    ax.set_ylabel("training images")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def dedup_folders(train_dirs: list[str | Path], eval_dirs: list[str | Path], out_dir: str | Path,
                  cfg: DedupConfig) -> dict:
    """``medsage data dedup --train DIR --eval DIR ... --out DIR`` on plain image folders."""
    out_dir = Path(out_dir)
    from medsage.data_pipeline.eval_images import collect_eval_images

    cache = out_dir / ".hashes"
    train_paths, eval_paths = list_images(train_dirs), collect_eval_images(eval_dirs, cache / "eval_parquet_images")
    train = hash_in_shards(train_paths, cache, "train", cfg)
    evals = hash_in_shards(eval_paths, cache, "eval", cfg)
    result = dedup(train, evals, cfg)
    return write_report(out_dir, result, cfg, n_eval=sum(h is not None for h in evals.values()))
