"""pHash dedup: transformed copies of eval images are caught, distinct images kept, search == brute force,
faiss == numpy (ties included), and the hash cache notices a replaced image."""

from __future__ import annotations

import io
import json
import shutil

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from medsage.data_pipeline import dedup as dd
from medsage.data_pipeline import near_duplicates as nd
from medsage.data_pipeline.cli import main as data_main

TRANSFORMS = {
    "resized": lambda im: im.resize((im.width // 2, im.height // 2)),
    "upscaled": lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2)),
    "jpeg": lambda im: _jpeg(im, 60),
    "cropped": lambda im: im.crop((int(im.width * .025), int(im.height * .025), int(im.width * .975), int(im.height * .975))),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "shifted": lambda im: Image.fromarray(np.clip(np.asarray(im, dtype=np.int16) + 25, 0, 255).astype(np.uint8)),
}


def _jpeg(im, quality):
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.fixture
def folders(tmp_path, picture):
    """eval/: 6 originals; train/: every transform of every original + 6 distinct images."""
    ev, tr = tmp_path / "eval", tmp_path / "train"
    ev.mkdir()
    tr.mkdir()
    for i in range(6):
        original = Image.fromarray(picture(100 + i, 256))
        original.save(ev / f"eval_{i}.png")
        for name, fn in TRANSFORMS.items():
            fn(original).convert("RGB").save(tr / f"copy_{i}_{name}.jpg" if name == "jpeg" else tr / f"copy_{i}_{name}.png")
        Image.fromarray(picture(500 + i, 256)).save(tr / f"distinct_{i}.png")
    return tr, ev


def test_dedup_folders_catches_every_transformed_copy_and_keeps_distinct(folders, tmp_path):
    train, ev = folders
    out = tmp_path / "report"
    assert data_main(["dedup", "--train", str(train), "--eval", str(ev), "--out", str(out), "--workers", "2"]) == 0
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    kept = (out / "kept.txt").read_text().split()
    assert sorted(p.rsplit("/", 1)[1] for p in kept) == [f"distinct_{i}.png" for i in range(6)]
    assert len(removed) == 6 * len(TRANSFORMS)
    for r in removed:
        name = r["image"].rsplit("/", 1)[1]
        i = name.split("_")[1]
        assert r["reason"] == "eval-leak"
        assert r["nearest"].endswith(f"eval_{i}.png"), r  # the copy points at its own original
        assert 0 <= r["distance"] <= dd.DEFAULT_THRESHOLD
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] + summary["removed"] == summary["train_images"] == 6 * (len(TRANSFORMS) + 1)
    assert summary["removed_by_reason"] == {"eval-leak": 36}
    assert (out / "nearest_eval_distance.png").stat().st_size > 1000


def test_near_duplicates_inside_the_training_pool(tmp_path, picture):
    train = tmp_path / "train"
    train.mkdir()
    a = Image.fromarray(picture(7, 200))
    a.save(train / "a.png")
    _jpeg(a, 50).save(train / "b.jpg")
    Image.fromarray(picture(8, 200)).save(train / "c.png")
    hashes = {str(p): dd.phash_file(str(p)) for p in sorted(train.iterdir())}
    result = dd.dedup(hashes, {}, dd.DedupConfig())
    assert [r["image"].rsplit("/", 1)[1] for r in result.removed] == ["b.jpg"]
    assert result.removed[0]["reason"] == "train-duplicate" and result.removed[0]["nearest"].endswith("a.png")
    off = dd.dedup(hashes, {}, dd.DedupConfig(within_train=False))
    assert not off.removed


def test_unreadable_training_image_is_reported_not_dropped_silently(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    result = dd.dedup({str(tmp_path / "broken.png"): dd.phash_file(str(tmp_path / "broken.png"))}, {}, dd.DedupConfig())
    assert result.removed[0]["reason"] == "unreadable-image"


def test_vectorised_nearest_equals_a_pairwise_imagehash_loop():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 2**63, 300, dtype=np.uint64) ^ rng.integers(0, 2, 300, dtype=np.uint64) << np.uint64(63)
    evals = rng.integers(0, 2**63, 170, dtype=np.uint64)
    evals[:20] = train[:20] ^ np.uint64(0b1011)  # 3-bit neighbours
    idx, dist = nd.nearest(train, evals)
    as_hash = lambda v: imagehash.hex_to_hash(f"{int(v):016x}")  # noqa: E731
    eval_hashes = [as_hash(e) for e in evals]
    for k, t in enumerate(train):
        distances = [as_hash(t) - e for e in eval_hashes]
        assert dist[k] == min(distances)
        assert distances[idx[k]] == dist[k]
    assert (dist[:20] <= 3).all()


def test_byte_table_popcount_matches_numpy(monkeypatch):
    values = np.random.default_rng(1).integers(0, 2**63, (50, 40), dtype=np.uint64)
    fast = nd.popcount64(values)
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    slow = nd.popcount64(values)
    assert (fast == slow).all() and fast.max() > 20


def test_phash_int_matches_imagehash(tmp_path, picture):
    Image.fromarray(picture(3)).save(tmp_path / "x.png")
    assert dd.phash_file(str(tmp_path / "x.png")) == int(str(imagehash.phash(Image.open(tmp_path / "x.png"))), 16)


def test_hash_shards_are_reused(tmp_path, picture):
    paths = []
    for i in range(5):
        Image.fromarray(picture(i, 64)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    cfg = dd.DedupConfig(shard_size=2, workers=1)
    first = dd.hash_in_shards(paths, tmp_path / "cache", "t", cfg)
    shards = sorted((tmp_path / "cache").glob("t-*.json"))
    assert len(shards) == 3
    stamps = [s.stat().st_mtime_ns for s in shards]
    assert dd.hash_in_shards(paths, tmp_path / "cache", "t", cfg) == first
    assert [s.stat().st_mtime_ns for s in shards] == stamps


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert data_main(["dedup", "--train", str(tmp_path / "nope"), "--eval", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "nope does not exist" in capsys.readouterr().err


def _tied_hashes(n_train: int, n_eval: int, seed: int):
    """Random hashes with planted near copies, exact ties (two eval hashes equally near one train hash)
    and duplicate eval hashes, so the lowest-index rule is exercised."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 2**64 - 1, n_train, dtype=np.uint64, endpoint=True)
    evals = rng.integers(0, 2**64 - 1, n_eval, dtype=np.uint64, endpoint=True)
    evals[:40] = train[:40] ^ np.uint64(0b111)  # 3 bits away
    evals[40:80] = train[:40] ^ np.uint64(0b111 << 20)  # equally near: a tie with evals[:40]
    evals[80:90] = evals[:10]  # exact duplicates inside eval
    train[100:150] = train[:50] ^ np.uint64(1 << 40)  # near duplicates inside train
    train[150:160] = train[:10]  # exact duplicates inside train
    return train, evals


def test_faiss_and_numpy_searches_agree_on_ties(monkeypatch):
    pytest.importorskip("faiss")
    train, evals = _tied_hashes(3000, 700, seed=4)
    fast = nd.find_near_duplicates(train, evals, 10)
    fast_pairs, fast_nn = nd.near_pairs_within(train, 10), nd.nearest(train, evals)
    monkeypatch.setattr(nd, "_faiss", lambda: None)
    slow = nd.find_near_duplicates(train, evals, 10)
    assert len(fast.query) >= 40
    for a, b in zip((fast.query, fast.reference, fast.distance), (slow.query, slow.reference, slow.distance)):
        assert a.tolist() == b.tolist()
    assert fast.reference[:40].tolist() == list(range(40))  # ties go to the lower eval index
    assert nd.near_pairs_within(train, 10) == fast_pairs and len(fast_pairs) >= 60
    slow_nn = nd.nearest(train, evals)
    assert fast_nn[1].tolist() == slow_nn[1].tolist() and fast_nn[0].tolist() == slow_nn[0].tolist()


def test_dedup_decisions_are_the_same_without_faiss(monkeypatch):
    pytest.importorskip("faiss")
    train, evals = _tied_hashes(1500, 400, seed=5)
    t = {f"/t/{k:05d}.png": int(h) for k, h in enumerate(train)} | {"/t/broken.png": None}
    e = {f"/e/{k:05d}.png": int(h) for k, h in enumerate(evals)}
    fast = dd.dedup(t, e, dd.DedupConfig())
    monkeypatch.setattr(nd, "_faiss", lambda: None)
    slow = dd.dedup(t, e, dd.DedupConfig())
    assert fast == slow
    reasons = {r["reason"] for r in fast.removed}
    assert reasons == {"eval-leak", "train-duplicate", "unreadable-image"}


def test_find_near_duplicates_on_empty_sides():
    assert len(nd.find_near_duplicates([], [1, 2], 10).query) == 0
    assert len(nd.find_near_duplicates([1, 2], [], 10).query) == 0
    hit = nd.find_near_duplicates([0b1011, 2**64 - 1], [0b1000], 2)
    assert hit.query.tolist() == [0] and hit.reference.tolist() == [0] and hit.distance.tolist() == [2]


def test_replacing_a_training_image_with_an_eval_copy_is_caught_on_rerun(folders, tmp_path):
    """The hash cache is keyed by each file's stamp: a copy that keeps the old mtime (copy2) is still seen."""
    train, ev = folders
    out = tmp_path / "report"
    args = ["dedup", "--train", str(train), "--eval", str(ev), "--out", str(out), "--workers", "1"]
    assert data_main(args) == 0
    assert "distinct_0.png" in (out / "kept.txt").read_text()
    shutil.copy2(ev / "eval_3.png", train / "distinct_0.png")
    assert data_main(args) == 0
    assert "distinct_0.png" not in (out / "kept.txt").read_text()
    leak = next(json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()
                if line.endswith('"eval-leak"}') and "distinct_0" in line)
    assert leak["nearest"].endswith("eval_3.png") and leak["distance"] == 0


def test_hash_cache_rehashes_only_changed_files(tmp_path, picture, monkeypatch):
    paths = []
    for i in range(5):
        Image.fromarray(picture(i, 64)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    cfg = dd.DedupConfig(shard_size=2, workers=1)
    first = dd.hash_in_shards(paths, tmp_path / "cache", "t", cfg)
    Image.fromarray(picture(40, 64)).save(tmp_path / "3.png")
    hashed = []
    real = dd.phash_file
    monkeypatch.setattr(dd, "phash_file", lambda p, **kw: hashed.append(p) or real(p, **kw))
    second = dd.hash_in_shards(paths, tmp_path / "cache", "t", cfg)
    assert hashed == [paths[3]]
    assert second[paths[3]] != first[paths[3]] and {p: second[p] for p in paths if p != paths[3]} == \
        {p: first[p] for p in paths if p != paths[3]}
    assert dd.hash_in_shards(paths[:3], tmp_path / "cache", "t", cfg) == {p: second[p] for p in paths[:3]}
    assert sorted(f.name for f in (tmp_path / "cache").iterdir()) == ["t-00000.json", "t-00001.json"]
