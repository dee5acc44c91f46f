"""pHash hashing: a process pool vs one process on the same images.

    python bench/bench_hashing.py                    # 600 generated 512x512 PNGs, all CPU cores
    python bench/bench_hashing.py --images 2000 --workers 8

Images are CT-like pictures written to a temporary folder first (not timed). Both sides hash the same
files with ``medsage.data_pipeline.dedup.hash_files`` (one process pool for the whole list, images
streamed to it a few at a time) and must give the same hashes. Each side runs ``--repeats`` times,
alternating, so both see the same background load; the best time of each is compared and the spread
(worst / best) says how noisy the machine was.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_images(folder: Path, n: int, size: int) -> list[str]:
    from PIL import Image, ImageDraw, ImageFilter

    paths = []
    for i in range(n):
        rng = np.random.default_rng(i)
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        draw.ellipse([8, 24, size - 8, size - 24], fill=int(rng.integers(60, 100)))
        for _ in range(6):
            cx, cy = rng.integers(size // 5, size - size // 5, 2)
            rx, ry = rng.integers(size // 20, size // 5, 2)
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.integers(20, 250)))
        arr = np.asarray(img.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32) + rng.normal(0, 5, (size, size))
        path = folder / f"img_{i:05d}.png"
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path)
        paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from medsage.data_pipeline.dedup import hash_files

    times: dict[int, list[float]] = {1: [], args.workers: []}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_images(Path(tmp), args.images, args.size)
        expected = None
        for _ in range(args.repeats):
            for workers in times:
                start = time.perf_counter()
                hashes = hash_files(paths, workers=workers)
                times[workers].append(time.perf_counter() - start)
                assert expected is None or hashes == expected, "process pool and single process disagree"
                expected = hashes
        load.append(os.getloadavg()[0])
    one_s, pool_s = min(times[1]), min(times[args.workers])
    print(f"pHash of {args.images} {args.size}x{args.size} PNGs, best of {args.repeats} (alternating)")
    for workers, label in ((1, "one process"), (args.workers, f"{args.workers} processes")):
        best = min(times[workers])
        print(f"  {label:>12}: {best:6.2f} s  {args.images / best:6.0f} img/s  "
              f"{args.images / best / workers:6.0f} img/s per core   (spread worst/best {max(times[workers]) / best:.2f})")
    print(f"  speed-up ratio (one / pool): {one_s / pool_s:.2f}x on {os.cpu_count()} CPU cores; "
          f"load average {load[0]:.1f} before, {load[1]:.1f} after (other work on the cores caps the ratio)")


if __name__ == "__main__":
    main()
