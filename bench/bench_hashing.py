"""pHash hashing: a process pool vs one process on the same images.

    python bench/bench_hashing.py                    # 600 generated 512x512 PNGs, all CPU cores
    python bench/bench_hashing.py --images 2000 --workers 8

Images are CT-like pictures written to a temporary folder first (not timed). Both runs hash the same
files with ``medsage.data_pipeline.dedup.hash_files`` and must give the same hashes.
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
    args = parser.parse_args()

    from medsage.data_pipeline.dedup import hash_files

    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_images(Path(tmp), args.images, args.size)
        start = time.perf_counter()
        one = hash_files(paths, workers=1)
        one_s = time.perf_counter() - start
        start = time.perf_counter()
        pooled = hash_files(paths, workers=args.workers)
        pool_s = time.perf_counter() - start
    assert one == pooled, "process pool and single process disagree"
    print(f"pHash of {args.images} {args.size}x{args.size} PNGs")
    print(f"  one process: {one_s:.2f} s ({args.images / one_s:.0f} img/s)")
    print(f"  {args.workers} processes: {pool_s:.2f} s ({args.images / pool_s:.0f} img/s)")
    print(f"  speed-up ratio (one / pool): {one_s / pool_s:.2f}x on {os.cpu_count()} CPU cores "
          f"(load average {os.getloadavg()[0]:.1f}: other work on the cores caps the ratio)")


if __name__ == "__main__":
    main()
