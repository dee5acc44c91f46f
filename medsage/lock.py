"""An exclusive lock on an output folder, so two runs never write into one folder at once.

``<folder>/.medsage.lock`` is held with ``flock`` for the whole run and holds the holder's pid, host,
start time and command while it is held. A second run finds it held and stops at once, naming the
holder. The kernel drops a ``flock`` when its process dies (kill -9 included), so a lock file still
naming a holder but not held is stale: it is taken over with a message saying so. A clean exit
empties the file rather than deleting it (deleting a lock file others may have open lets two runs
each lock a different file).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".medsage.lock"


class FolderLocked(RuntimeError):
    """Another run holds the output folder."""


@contextmanager
def folder_lock(folder: str | Path, what: str = "run"):
    """Hold ``folder``'s lock for the ``with`` block; raises ``FolderLocked`` at once if another run holds it."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            raise FolderLocked(f"{folder} is in use by another {what} ({holder}); wait for it to finish, or use "
                               f"another output folder") from None
        previous = os.pread(fd, 4096, 0)
        if previous.strip():
            print(f"medsage: breaking a stale lock on {folder} left by a run that is no longer running "
                  f"({_describe(previous)})", file=sys.stderr, flush=True)
        mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:500]})
        os.ftruncate(fd, 0)
        os.pwrite(fd, mine.encode() + b"\n", 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _describe(raw: bytes) -> str:
    try:
        h = json.loads(raw.decode("utf-8", "replace") or "{}")
        return f"{h.get('what', 'run')} pid {h.get('pid')} on host {h.get('host')}, started {h.get('started')}"
    except (ValueError, AttributeError):
        return "holder unknown"
