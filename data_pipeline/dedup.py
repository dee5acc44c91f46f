"""pHash dedup: no training image may be a copy of an evaluation image, nor of another training image.

Every image is hashed with ``imagehash.phash`` (64 bits: the signs of the low 8x8 DCT block of a
32x32 grey thumbnail), across processes, in shards written atomically so an interrupted run resumes
without rehashing. Hashes are packed as ``uint64`` and compared in chunks: XOR of a chunk of train
hashes against every eval hash, popcount (``np.bitwise_count``, or a byte lookup table on older
numpy) and a row-wise minimum — no Python loop over pairs.

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
from dataclasses import dataclass, field
from pathlib import Path

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

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 64:
            raise ValueError(f"threshold must be 0..64 bits, got {self.threshold}")


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def phash_file(path: str) -> int | None:
    """The 64-bit pHash of an image as an int, or ``None`` when the file cannot be read."""
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as img:
            return int(str(imagehash.phash(img)), 16)
    except (OSError, ValueError, SyntaxError):
        return None


def hash_files(paths: list[str], workers: int | None = None, desc: str = "hashing") -> list[int | None]:
    """pHash of every path, across ``workers`` processes (1 = in this process), with a progress bar."""
    from tqdm import tqdm

    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 2 * workers:
        return [phash_file(p) for p in tqdm(paths, desc=desc, unit="img", leave=False)]
    from concurrent.futures import ProcessPoolExecutor

    chunksize = max(1, min(64, len(paths) // (workers * 4)))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(phash_file, paths, chunksize=chunksize), total=len(paths), desc=desc,
                         unit="img", leave=False))


def hash_in_shards(paths: list[str], cache_dir: Path, prefix: str, cfg: DedupConfig) -> dict[str, int | None]:
    """Hash ``paths`` shard by shard; a shard file (written atomically) is reused when its path list matches."""
    from medsage.io import atomic_write_json

    out: dict[str, int | None] = {}
    for start in range(0, len(paths), cfg.shard_size):
        chunk = paths[start:start + cfg.shard_size]
        shard = cache_dir / f"{prefix}-{start // cfg.shard_size:05d}.json"
        if shard.exists():
            cached = json.loads(shard.read_text())
            if cached.get("paths") == chunk:
                out.update(zip(chunk, cached["hashes"]))
                continue
        hashes = hash_files(chunk, cfg.workers, desc=f"{prefix} shard {start // cfg.shard_size}")
        atomic_write_json(shard, {"paths": chunk, "hashes": hashes})
        out.update(zip(chunk, hashes))
    return out


# --------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------


def pack(hashes: list[int]):
    """Python ints -> a uint64 array."""
    import numpy as np

    return np.array(hashes, dtype=np.uint64)


def popcount64(x):
    """Bits set in each uint64: ``np.bitwise_count`` when numpy has it, else a byte lookup table."""
    import numpy as np

    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.reshape(*x.shape, 1).view(np.uint8)].sum(axis=-1, dtype=np.uint8)


def nearest(query, reference):
    """For each query hash, the index of its nearest reference hash and the distance (bits)."""
    import numpy as np

    if len(reference) == 0:
        return np.full(len(query), -1, dtype=np.int64), np.full(len(query), 65, dtype=np.uint8)
    rows = max(1, _ELEMENTS_PER_CHUNK // len(reference))
    idx = np.empty(len(query), dtype=np.int64)
    dist = np.empty(len(query), dtype=np.uint8)
    for start in range(0, len(query), rows):
        d = popcount64(query[start:start + rows, None] ^ reference[None, :])
        idx[start:start + rows] = d.argmin(axis=1)
        dist[start:start + rows] = d[np.arange(len(d)), idx[start:start + rows]]
    return idx, dist


def near_pairs_within(hashes, threshold: int) -> dict[int, list[tuple[int, int]]]:
    """For each i, the earlier j < i within ``threshold`` bits, as ``{i: [(j, distance), ...]}``."""
    import numpy as np

    pairs: dict[int, list[tuple[int, int]]] = {}
    rows = max(1, _ELEMENTS_PER_CHUNK // max(1, len(hashes)))
    for start in range(0, len(hashes), rows):
        stop = min(len(hashes), start + rows)
        d = popcount64(hashes[start:stop, None] ^ hashes[None, :stop])
        ii, jj = np.nonzero((d <= threshold) & (np.arange(stop)[None, :] < np.arange(start, stop)[:, None]))
        for i, j in zip(ii.tolist(), jj.tolist()):
            pairs.setdefault(start + i, []).append((j, int(d[i, j])))
    return pairs


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
    train_hashes = pack([train[p] for p in readable])
    idx, dist = nearest(train_hashes, pack([evals[p] for p in eval_paths]))
    nearest_eval = {p: int(d) for p, d in zip(readable, dist.tolist())} if eval_paths else {}
    for k, p in enumerate(readable):
        if eval_paths and dist[k] <= cfg.threshold:
            removed[p] = {"image": p, "reason": "eval-leak", "nearest": eval_paths[idx[k]], "distance": int(dist[k])}
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

    from medsage.io import atomic_write_json, atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "kept.txt", "".join(p + "\n" for p in result.kept))
    atomic_write_text(out_dir / "removed.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in result.removed))
    summary = {
        "threshold_bits": cfg.threshold, "within_train": cfg.within_train, "eval_images": n_eval,
        "train_images": len(result.kept) + len(result.removed), "kept": len(result.kept),
        "removed": len(result.removed),
        "removed_by_reason": dict(sorted(Counter(r["reason"] for r in result.removed).items())),
    }
    atomic_write_json(out_dir / "summary.json", summary)
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
