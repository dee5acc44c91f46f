"""Near-duplicate search over 64-bit pHashes: faiss-cpu's exact binary index, numpy when faiss is missing.

``find_near_duplicates(query, reference, threshold)`` is the one public search: for every query hash
with a reference hash within ``threshold`` bits, its nearest one (the lowest reference index among
equally near ones, so the answer does not depend on the index or the thread count). ``medsage data
dedup`` and ``medsage data audit`` both call it.

Why ``IndexBinaryFlat`` (exact brute force, popcount over packed codes) and not faiss's hashing
indexes: ``IndexBinaryMultiHash`` with a pigeonhole setting that keeps it exact at 10 bits (4 tables
of 16 bits, 2 flips) was 10x slower than the flat index at 20k x 5k and 6x slower at 200k x 50k
(one thread, random hashes; ``bench/bench_dedup.py --multihash`` prints the comparison): at 64 bits
a flat scan is a few popcounts per pair and the hash tables' probing costs more than it saves.
The search is exact either way, so the choice changes only the time.

Without faiss the same answers come from a chunked numpy XOR + popcount (``np.bitwise_count``, or a
byte lookup table on older numpy).
"""

from __future__ import annotations

from dataclasses import dataclass

_ELEMENTS_PER_CHUNK = 1 << 23  # numpy: ~64 MB of distances per chunk
_PAIRS_PER_SEARCH = 1 << 26  # faiss: query rows x reference hashes per range search (bounds its results)
# nearest(): random 64-bit hashes have their nearest of 12k-120k others at 14-18 bits; real pHashes nearer.
_NEAR_BITS = 20


def _faiss():
    try:
        import faiss
    except ImportError:  # the numpy path below gives the same answers, slower
        return None
    return faiss


def pack(hashes):
    """Python ints (or an array) -> a contiguous uint64 array."""
    import numpy as np

    return np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64).reshape(-1))


def _codes(hashes):
    """uint64 hashes as faiss binary codes (8 bytes each; the Hamming distance ignores byte order)."""
    import numpy as np

    return pack(hashes).view(np.uint8).reshape(-1, 8)


@dataclass(frozen=True)
class NearDuplicates:
    """Matches of a search: ``query[k]`` is within ``distance[k]`` bits of ``reference[k]``, its nearest."""

    query: "np.ndarray"  # noqa: F821  int64 indices into the query hashes, ascending
    reference: "np.ndarray"  # noqa: F821  int64 index of the nearest reference hash
    distance: "np.ndarray"  # noqa: F821  uint8 Hamming distance in bits


def find_near_duplicates(query, reference, threshold: int) -> NearDuplicates:
    """Every query hash within ``threshold`` bits of a reference hash, with its nearest reference.

    ``query`` and ``reference`` are 64-bit pHashes (ints or a uint64 array). Ties are broken by the
    lower reference index, so with sorted inputs the answer is the same on every run.
    """
    import numpy as np

    q, r = pack(query), pack(reference)
    if not len(q) or not len(r):
        empty = np.empty(0, dtype=np.int64)
        return NearDuplicates(empty, empty.copy(), np.empty(0, dtype=np.uint8))
    faiss = _faiss()
    if faiss is None:
        idx, dist = nearest(q, r)
        hit = np.flatnonzero(dist <= threshold)
        return NearDuplicates(hit.astype(np.int64), idx[hit], dist[hit])
    return _nearest_within(_flat(faiss, r), q, threshold)


def _flat(faiss, reference):
    index = faiss.IndexBinaryFlat(64)
    index.add(_codes(reference))
    return index


def _rows_per_search(n_reference: int) -> int:
    return int(min(1 << 16, max(256, _PAIRS_PER_SEARCH // max(1, n_reference))))


def _range(index, codes, threshold: int):
    """faiss's range search within ``threshold`` bits: (lims, reference ids, distances) as int64."""
    import numpy as np

    lims, dist, ids = index.range_search(codes, threshold + 1)  # faiss keeps distances < radius
    return lims.astype(np.int64), ids.astype(np.int64), dist.astype(np.int64)


def _nearest_within(index, q, threshold: int) -> NearDuplicates:
    """The nearest reference (lowest index on ties) of every query row with one within ``threshold``."""
    import numpy as np

    parts = []
    step = _rows_per_search(index.ntotal)
    for start in range(0, len(q), step):
        lims, ids, dist = _range(index, _codes(q[start:start + step]), threshold)
        rows = np.flatnonzero(lims[1:] > lims[:-1])
        # min of (distance, id) per row in one pass: distance in the high bits, id in the low 40
        best = np.minimum.reduceat((dist << 40) | ids, lims[rows]) if len(rows) else rows
        parts.append((rows + start, best & ((1 << 40) - 1), (best >> 40).astype(np.uint8)))
    return NearDuplicates(*(np.concatenate(p) for p in zip(*parts)))


def near_pairs_within(hashes, threshold: int) -> dict[int, list[tuple[int, int]]]:
    """For each i, the earlier j < i within ``threshold`` bits, as ``{i: [(j, distance), ...]}``.

    faiss: the pool is added to the index block by block and each block searched against what is in
    it so far, so only the lower triangle of pairs is computed.
    """
    import numpy as np

    h = pack(hashes)
    pairs: dict[int, list[tuple[int, int]]] = {}
    faiss = _faiss()
    if faiss is None:
        rows = max(1, _ELEMENTS_PER_CHUNK // max(1, len(h)))
        for start in range(0, len(h), rows):
            stop = min(len(h), start + rows)
            d = popcount64(h[start:stop, None] ^ h[None, :stop])
            ii, jj = np.nonzero((d <= threshold) & (np.arange(stop)[None, :] < np.arange(start, stop)[:, None]))
            for i, j in zip(ii.tolist(), jj.tolist()):
                pairs.setdefault(start + i, []).append((j, int(d[i, j])))
        return pairs
    index = faiss.IndexBinaryFlat(64)
    step = _rows_per_search(len(h))
    for start in range(0, len(h), step):
        block = _codes(h[start:start + step])
        index.add(block)
        lims, ids, dist = _range(index, block, threshold)
        rows = np.repeat(np.arange(start, start + len(block)), np.diff(lims))
        keep = ids < rows
        for i, j, d in zip(rows[keep].tolist(), ids[keep].tolist(), dist[keep].tolist()):
            pairs.setdefault(i, []).append((j, d))
    return {i: sorted(p) for i, p in sorted(pairs.items())}


def nearest(query, reference):
    """For each query hash, the index of its nearest reference hash (lowest on ties) and the distance.

    Exact 1-NN of every query (the report's histogram wants the distance of distant images too).
    faiss: one range search at ``_NEAR_BITS`` answers almost every query exactly (its nearest is the
    nearest of what came back), and only the queries with nothing that near go to a k-NN search,
    which is several times slower per pair than a range search.
    """
    import numpy as np

    query, reference = pack(query), pack(reference)
    if len(reference) == 0:
        return np.full(len(query), -1, dtype=np.int64), np.full(len(query), 65, dtype=np.uint8)
    faiss = _faiss()
    if faiss is not None:
        index = _flat(faiss, reference)
        near = _nearest_within(index, query, _NEAR_BITS)
        idx, dist = np.full(len(query), -1, dtype=np.int64), np.zeros(len(query), dtype=np.uint8)
        idx[near.query], dist[near.query] = near.reference, near.distance
        far = np.flatnonzero(idx < 0)
        if len(far):  # nothing within _NEAR_BITS: any nearest is far above every threshold
            d, i = index.search(_codes(query[far]), 1)
            idx[far], dist[far] = i[:, 0], d[:, 0]
        return idx, dist
    rows = max(1, _ELEMENTS_PER_CHUNK // len(reference))
    idx = np.empty(len(query), dtype=np.int64)
    dist = np.empty(len(query), dtype=np.uint8)
    for start in range(0, len(query), rows):
        d = popcount64(query[start:start + rows, None] ^ reference[None, :])
        idx[start:start + rows] = d.argmin(axis=1)
        dist[start:start + rows] = d[np.arange(len(d)), idx[start:start + rows]]
    return idx, dist


def popcount64(x):
    """Bits set in each uint64: ``np.bitwise_count`` when numpy has it, else a byte lookup table."""
    import numpy as np

    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.reshape(*x.shape, 1).view(np.uint8)].sum(axis=-1, dtype=np.uint8)
