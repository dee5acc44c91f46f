"""Secrets: read from the environment only, refused in recipes, and redacted from every text kept or printed.

``redact`` replaces the key values read by ``api_key`` in this process and anything shaped like a
key (``Bearer ...``, ``sk-...``, ``api_key=...``, ``Authorization: ...``) with ``[REDACTED]``. The
token patterns stop at quotes and backslashes, so redacting JSON text leaves it valid JSON.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

REDACTED = "[REDACTED]"
_SECRETS: set[str] = set()  # key values read from the environment by any client of this process
_SECRET_SHAPES = [
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;}\\]+"), f"Bearer {REDACTED}"),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"), f"sk-{REDACTED}"),
    (re.compile(r"(?i)((?:api[_-]?key|authorization|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}\\]+"),
     rf"\1{REDACTED}"),
]


def redact(text: object) -> str:
    """``text`` with every known key value and every key-shaped token replaced by ``[REDACTED]``."""
    out = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    for pattern, repl in _SECRET_SHAPES:
        out = pattern.sub(repl, out)
    return out


def api_key(env: str) -> str:
    """The key in ``$env`` (registered for redaction), or "EMPTY" for a local server that needs none."""
    key = os.environ.get(env) or ""
    if len(key) >= 4:
        _SECRETS.add(key)
    return key or "EMPTY"


def refuse_keys(mapping: Mapping, where: str) -> None:
    """A ``ValueError`` naming the environment variable to use when a recipe node holds a key itself."""
    for name in mapping:
        if re.fullmatch(r"(?i)(api[_-]?key|key|token|secret|password)", str(name)):
            env = mapping.get("api_key_env") or "OPENAI_API_KEY"
            raise ValueError(f"{where}.{name}: an API key may not be written in a recipe or an override (it would "
                             f"reach logs and reports); export it as ${env} and set {where}.api_key_env={env}")
