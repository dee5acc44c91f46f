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


_SECRET_NAME = re.compile(r"(?i)api[_-]?key|key|token|secret|password")  # a key that holds a secret itself
# `+client.api_key=...` anywhere in an override's text, a list of overrides included (`x_overrides=["+a.key=..."]`)
_SECRET_OVERRIDE = re.compile(r"(?i)(?:^|[\s\[,'\"+~])((?:[\w@/-]+\.)*(?:api[_-]?key|key|token|secret|password))\s*=")


def key_refusal(name: str, env: str = "OPENAI_API_KEY") -> str:
    """Why the key ``name`` (dotted) is refused, and what to do instead; no word of it is key-shaped (``redact``
    leaves it whole)."""
    where = name.rpartition(".")[0]
    setting = f"{where}.api_key_env" if where else "api_key_env"
    return (f"{name} holds an API key, which may not be written in a recipe or an override (it would reach logs and "
            f"reports); export it as ${env} and set {setting}={env}")


def refuse_keys(mapping: Mapping, where: str) -> None:
    """A ``ValueError`` naming the environment variable to use when a recipe node holds a key itself."""
    for name in mapping:
        if _SECRET_NAME.fullmatch(str(name)):
            raise ValueError(key_refusal(f"{where}.{name}", mapping.get("api_key_env") or "OPENAI_API_KEY"))


def inline_keys(node: object, where: str = "") -> list[str]:
    """The dotted names of the keys written in ``node`` (a plain container of a composed recipe, or override
    strings): a mapping key named like a key (``synthesis.api_key``), or one set by an override string in it
    (``synthesis_overrides=["+client.api_key=..."]``). Never their values."""
    found: list[str] = []
    if isinstance(node, Mapping):
        for name, value in node.items():
            path = f"{where}.{name}" if where else str(name)
            if _SECRET_NAME.fullmatch(str(name)) and value not in (None, ""):
                found.append(path)
            found += inline_keys(value, path)
    elif isinstance(node, (list, tuple)):
        for k, value in enumerate(node):
            found += inline_keys(value, f"{where}[{k}]")
    elif isinstance(node, str):
        found += [f"{where}: {m[1]}" if where else m[1] for m in _SECRET_OVERRIDE.finditer(node)]
    return found
