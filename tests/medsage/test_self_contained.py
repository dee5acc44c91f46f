"""The repository stands on its own: no tracked file points at design notes or papers outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Built from pieces so that this file does not match itself.
OUTSIDE = ["DESIGN" + ".md", "../" + "shared", "shared/" + "paper"]


def test_no_file_refers_to_notes_outside_the_repository():
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are unknown")
    hits = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        hits += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert not hits, "files that refer outside the repository:\n" + "\n".join(hits)
