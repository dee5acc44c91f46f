"""Atomic file writes: a reader never sees half a file, and an interrupted write leaves none behind.

Files get the permissions ``open()`` would give them (0666 less the umask), not the 0600 of the
temporary file they are written as.

JSON lines are written only here (``json_line``): one encoding for every stage's rows, so two writers
cannot disagree on key order or on how non-ASCII text is stored.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterable


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (other threads may be creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_if_changed(path: str | Path, data: bytes) -> Path:
    """``atomic_write_bytes`` unless ``path`` already holds exactly ``data``: a derived file (a converted
    image) keeps its mtime and inode when recomputed from an unchanged source, so caches keyed by them hold."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
    except OSError:
        pass
    return atomic_write_bytes(path, data)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: object) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n")


def json_line(row: object) -> str:
    """One JSON-lines row: UTF-8 text as is, keys sorted (reruns diff cleanly), newline-terminated."""
    return json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n"


def atomic_write_jsonl(path: str | Path, rows: Iterable[object]) -> Path:
    """``rows`` as a JSON-lines file, written atomically."""
    return atomic_write_text(path, "".join(json_line(r) for r in rows))


def append_jsonl(fh: IO[str], rows: Iterable[object]) -> None:
    """Append ``rows`` to an open JSON-lines file and fsync: what was appended survives a kill."""
    fh.write("".join(json_line(r) for r in rows))
    fh.flush()
    os.fsync(fh.fileno())
