"""What every benchmark loader shares: declared metadata, the missing-data error, the size check.

A benchmark is one file (``vqa_rad.py``, ``slake.py``, ...) holding a ``Benchmark`` subclass with its
``info`` (published split sizes, where the data is published, question types, Table 1 column) and
a ``_load`` that reads the files users download, in their real layout, into ``medsage.records.Sample``.
Its quirks live beside it. Benchmarks are found through the ``medsage.benchmarks`` entry-point group,
so a lab adds its own exactly as medsage declares these.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from medsage.io import atomic_write_bytes
from medsage.records import Sample
from medsage.runtime import cache_root


class MissingDataError(FileNotFoundError):
    """The benchmark's files are not where the recipe says; names where we looked and where to get them."""


class SplitSizeWarning(UserWarning):
    """A split whose item count differs from the published one (scores are then not comparable)."""


class BenchmarkDataError(ValueError):
    """A row that cannot be read; the message names the file, the row and the reason."""


class UnknownSplitError(BenchmarkDataError):
    """A split the release does not have; the message lists the splits found."""


@dataclass(frozen=True)
class BenchmarkInfo:
    name: str                       # registry name, e.g. "vqa_rad"
    title: str                      # how papers name it, e.g. "VQA-RAD"
    published_at: str               # where users download it
    published_sizes: dict[str, int]  # split -> item count as published (the paper's protocol)
    question_types: tuple[str, ...]  # which of closed / open / choice occur
    default_split: str = "test"
    table1_column: str | None = None  # column in the paper's Table 1, when it has one
    group_by: str | None = None       # metadata key for a per-group breakdown (modality, subject)
    published_types: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> question type -> count
    notes: tuple[str, ...] = field(default_factory=tuple)


class Benchmark:
    """Base loader. ``path`` is the local folder (or file) the recipe names."""

    info: ClassVar[BenchmarkInfo]

    def __init__(self, path: str | Path, split: str | None = None, image_cache: str | Path | None = None,
                 strict: bool = True, **options):
        self.split = split or self.info.default_split
        self.options = options
        # strict=False (``medsage eval doctor``): a missing image is counted in ``missing_images``, not raised.
        self.strict = strict
        self.missing_images: list[str] = []
        self.layout = "?"                 # which release layout was read (set by ``_load``)
        self.files_read: list[str] = []   # the annotation files the split came from (run.json records them)
        self.stats: dict[str, int] = {}   # loader counts beside the item count (e.g. rows before de-duplication)
        if path is None or str(path) in ("", "???"):
            raise MissingDataError(self._missing_message(None, "no path was given (set it in the recipe)"))
        self.path = Path(path).expanduser()
        key = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:10]
        # Images embedded in parquet files are written out once, under the one cache root.
        self.image_cache = Path(image_cache) if image_cache else cache_root() / "images" / self.info.name / key

    # -- subclasses implement this -----------------------------------------------------------
    def _load(self) -> list[Sample]:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def load(self) -> list[Sample]:
        """Read the split, warn when its size differs from the published count, and return it."""
        if not self.path.exists():
            raise MissingDataError(self._missing_message([self.path], "does not exist"))
        samples = self._load()
        ids = [s.id for s in samples]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise BenchmarkDataError(f"{self.info.title} at {self.path}: item id {dup!r} occurs more than once")
        self.check_size(len(samples))
        return samples

    def published_size(self) -> int | None:
        return self.info.published_sizes.get(self.split)

    def check_size(self, n: int) -> None:
        expected = self.published_size()
        if expected is not None and n != expected:
            warnings.warn(
                f"{self.info.title} {self.split} split at {self.path} has {n} items; the published split has "
                f"{expected}. Scores on it are not comparable with the paper's.",
                SplitSizeWarning, stacklevel=2)

    def _missing_message(self, looked: list[Path] | None, why: str) -> str:
        where = ", ".join(str(p) for p in looked) if looked else "(nothing)"
        return (f"{self.info.title} ({self.split} split): {why}. Looked at: {where}. "
                f"The data is published at {self.info.published_at}; download it and set its folder in the "
                f"recipe (eval.benchmarks.{self.info.name}.path=...).")

    def find(self, *candidates: str) -> Path:
        """The first of ``candidates`` (relative to ``path``, globs allowed) that exists, else MissingDataError."""
        looked = []
        for cand in candidates:
            hits = sorted(self.path.glob(cand)) if any(c in cand for c in "*?[") else [self.path / cand]
            looked.append(self.path / cand)
            for hit in hits:
                if hit.exists():
                    return hit
        raise MissingDataError(self._missing_message(looked, "the expected files are missing"))

    def image_file(self, cell: object, key: str, where: str) -> str:
        """A path for an image cell of a parquet copy ({"bytes", "path"}); embedded bytes are written once."""
        if isinstance(cell, dict) and cell.get("bytes"):
            suffix = Path(cell.get("path") or "").suffix or ".png"
            name = hashlib.sha1(key.encode()).hexdigest()[:16] + suffix
            out = self.image_cache / name
            if not out.exists():
                atomic_write_bytes(out, cell["bytes"])
            return str(out)
        if isinstance(cell, dict) and cell.get("path"):
            p = Path(cell["path"])
            p = p if p.is_absolute() else self.path / p
            if p.exists():
                return str(p)
        if not self.strict:
            self.missing_images.append(f"{where}: image cell holds neither bytes nor an existing path")
            return ""
        raise BenchmarkDataError(f"{where}: image cell holds neither bytes nor an existing path")

    def find_parquet(self) -> list[Path]:
        """The split's parquet file of a Hugging Face copy (``data/<split>-*.parquet`` and the like).

        A split that is not there while others are is an ``UnknownSplitError`` listing them."""
        patterns = ("data/{}-*.parquet", "{}-*.parquet", "{}.parquet")
        found = sorted(set().union(*(self.path.glob(p.format("*")) for p in patterns)))
        for p in patterns:
            hits = sorted(self.path.glob(p.format(self.split)))
            if hits:
                self.layout = "parquet"
                self.files_read = [str(h) for h in hits]
                return hits
        splits = sorted({f.name.split("-")[0].split(".")[0] for f in found})
        if splits:
            raise self.unknown_split(splits)
        raise MissingDataError(self._missing_message([self.path / p.format(self.split) for p in patterns],
                                                     "the expected files are missing"))

    def local_image(self, folder: Path, name: str, where: str) -> str:
        p = folder / name
        if not p.exists():
            if self.strict:
                raise BenchmarkDataError(f"{where}: image {name!r} not found in {folder}")
            self.missing_images.append(f"{where}: {name}")
        return str(p.resolve())

    def unknown_split(self, found: list[str] | tuple[str, ...], where: Path | str | None = None) -> UnknownSplitError:
        """The error for a split the release does not have, listing the ones it has."""
        listed = ", ".join(sorted(found)) or "(none)"
        return UnknownSplitError(f"{self.info.title} at {where or self.path}: there is no split {self.split!r}; "
                                 f"the splits found are: {listed}")


def read_json_rows(path: Path) -> list[dict]:
    """A release's JSON list of items; invalid JSON is a ``BenchmarkDataError`` naming the file and line."""
    import json

    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BenchmarkDataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(rows, list):
        raise BenchmarkDataError(f"{path}: expected a JSON list of items, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BenchmarkDataError(f"{path} row {i}: expected a JSON object, got {type(row).__name__}")
    return rows


def read_parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def parquet_rows(paths: list[Path]):
    """``(where, key, row)`` over the shards in order; ``where`` names the file and row for errors."""
    for path in paths:
        for i, row in enumerate(read_parquet_rows(path)):
            yield f"{path} row {i}", f"{path}:{i}", row


def load_benchmark(name: str, path: str | Path, **options) -> list[Sample]:
    """Load a benchmark by its registry name (entry-point group ``medsage.benchmarks``)."""
    from medsage.registry import BENCHMARKS

    return BENCHMARKS.get(name)(path, **options).load()
