"""Dedup search: vectorised packed-uint64 XOR + popcount vs a plain pairwise ``imagehash`` loop.

    python bench/bench_dedup.py                      # 20k train x 5k eval hashes
    python bench/bench_dedup.py --train 50000 --eval 20000 --loop-rows 100
    python bench/bench_dedup.py --thresholds        # pHash distances of copies vs distinct images


Both sides find, for every train hash, the nearest eval hash. The vectorised search runs on all rows;
the pairwise loop (``ImageHash.__sub__`` over every pair, what a hand-written script does) runs on
``--loop-rows`` train rows and its per-row time is extrapolated to all rows (the loop is linear in
rows; ``--loop-rows 0`` runs it in full). The answers are checked equal on the rows both computed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _ct_like(seed: int, size: int = 256):
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse([10, 30, size - 10, size - 30], fill=int(rng.integers(60, 100)))
    for _ in range(int(rng.integers(4, 9))):
        cx, cy = rng.integers(40, size - 40, 2)
        rx, ry = rng.integers(8, 40, 2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.integers(20, 250)))
    arr = np.asarray(img.filter(ImageFilter.GaussianBlur(2)), dtype=np.float32) + rng.normal(0, 6, (size, size))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert("RGB")


def thresholds(n: int = 60) -> None:
    """The numbers behind DEFAULT_THRESHOLD: distances of transformed copies and of distinct look-alikes."""
    import io

    import imagehash
    from PIL import Image, ImageEnhance

    def jpeg(im, quality=60):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue()))

    transforms = {
        "resize 50%": lambda im: im.resize((im.width // 2, im.height // 2)),
        "resize 150%": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2)),
        "JPEG q60": jpeg,
        "crop 2.5% each side": lambda im: im.crop((int(im.width * .025), int(im.height * .025),
                                                   int(im.width * .975), int(im.height * .975))),
        "crop 5% one side": lambda im: im.crop((int(im.width * .05), 0, im.width, im.height)),
        "brightness x1.25": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
        "brightness x0.8": lambda im: ImageEnhance.Brightness(im).enhance(0.8),
        "grey level +30": lambda im: Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + 30, 0, 255).astype(np.uint8)),
    }
    images = [_ct_like(s) for s in range(n)]
    hashes = [imagehash.phash(im) for im in images]
    print(f"pHash distance (bits of 64) over {n} CT-like images")
    for name, fn in transforms.items():
        d = [imagehash.phash(fn(im)) - h for im, h in zip(images, hashes)]
        print(f"  copy, {name:22s} max {max(d):2d}  mean {np.mean(d):4.1f}")
    pairs = [hashes[i] - hashes[j] for i in range(n) for j in range(i)]
    print(f"  distinct pairs ({len(pairs)}):        min {min(pairs):2d}  1st pct {np.percentile(pairs, 1):4.1f}  "
          f"mean {np.mean(pairs):4.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--eval", type=int, default=5000)
    parser.add_argument("--loop-rows", type=int, default=200, help="train rows for the pairwise loop (0 = all)")
    parser.add_argument("--thresholds", action="store_true", help="print copy vs distinct distances instead")
    args = parser.parse_args()
    if args.thresholds:
        return thresholds()

    import imagehash

    from medsage.data_pipeline.dedup import nearest

    rng = np.random.default_rng(0)
    train = rng.integers(0, np.iinfo(np.uint64).max, args.train, dtype=np.uint64, endpoint=True)
    evals = rng.integers(0, np.iinfo(np.uint64).max, args.eval, dtype=np.uint64, endpoint=True)
    evals[: args.eval // 10] = train[: args.eval // 10] ^ np.uint64(0b101)  # some near copies

    start = time.perf_counter()
    idx, dist = nearest(train, evals)
    vec_s = time.perf_counter() - start

    rows = args.loop_rows or args.train
    to_hash = lambda v: imagehash.hex_to_hash(f"{int(v):016x}")  # noqa: E731
    eval_hashes = [to_hash(e) for e in evals]
    train_hashes = [to_hash(t) for t in train[:rows]]
    start = time.perf_counter()
    for k, t in enumerate(train_hashes):
        best = min(range(len(eval_hashes)), key=lambda j: t - eval_hashes[j])
        assert t - eval_hashes[best] == dist[k], "vectorised and pairwise searches disagree"
    loop_s = (time.perf_counter() - start) * args.train / rows

    print(f"search {args.train} train x {args.eval} eval hashes")
    print(f"  vectorised (numpy {np.__version__}, bitwise_count={hasattr(np, 'bitwise_count')}): {vec_s:.3f} s")
    print(f"  pairwise imagehash loop: {loop_s:.1f} s" + ("" if rows == args.train else
                                                         f" (extrapolated from {rows} rows)"))
    print(f"  speed-up ratio (loop / vectorised): {loop_s / vec_s:.0f}x")


if __name__ == "__main__":
    main()
