"""A pluggable knowledge source for knowledge matching (A.3.4): a user's file of entries, ranked by BM25.

A.3.4 retrieves from medical knowledge bases (disease spectra, imaging-sign terminology, differential
rules, guideline or commonsense associations) before f_know writes the stage. Here the base is a file:

- JSONL, one entry per line, or YAML with an ``entries`` list (``recipes/synthesis/knowledge_base.yaml``
  is our small seed); each entry has ``id`` and ``text``, optionally ``title``, ``kind`` and ``tags``;
- ranking is BM25+ from ``rank-bm25`` over title, tags and text, queried with what A.3.4 names: the
  question, the reference label, the visual analysis and the interpretation angle. BM25+ rather than
  Okapi BM25: Okapi's idf is zero for a term in half the entries, so a small base ranks nothing;
  BM25+ scores every entry, and an entry sharing no term with the query is never returned;
- the top ``top_k`` entries with a positive score go into the knowledge prompt (``{retrieved}``), and
  their ids into the stage's provenance.

A bad file fails at load time with the file, the line (JSONL) or entry index (YAML) and the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

_TOKEN_RE = re.compile(r"[a-z0-9]+")
# Words that carry no medical meaning: they would make every entry match every question.
_STOP = frozenset("a an and are as at be by for from has have how in is it its of on or that the this to was "
                  "what which with within there any image shown show shows seen does do".split())


class KnowledgeError(ValueError):
    def __init__(self, path: Path, where: str, reason: str):
        super().__init__(f"{path}{where}: {reason}")


def tokens(text: str) -> list[str]:
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOP]


@dataclass(frozen=True)
class Entry:
    id: str
    text: str
    title: str = ""
    kind: str = ""
    tags: tuple[str, ...] = ()

    def document(self) -> list[str]:
        return tokens(" ".join([self.title, *self.tags, self.text]))

    def line(self) -> str:
        """How the entry reads in the knowledge prompt."""
        head = f"{self.title}: " if self.title else ""
        return f"- [{self.id}] {head}{self.text}"


def _entry(obj, path: Path, where: str) -> Entry:
    if not isinstance(obj, dict):
        raise KnowledgeError(path, where, f"an entry must be an object, got {type(obj).__name__}")
    unknown = set(obj) - {"id", "text", "title", "kind", "tags"}
    if unknown:
        raise KnowledgeError(path, where, f"unknown key(s) {sorted(unknown)}")
    if not str(obj.get("id") or "").strip() or not str(obj.get("text") or "").strip():
        raise KnowledgeError(path, where, "an entry needs a non-empty 'id' and 'text'")
    tags = obj.get("tags") or []
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise KnowledgeError(path, where, "'tags' must be a list of words")
    return Entry(str(obj["id"]).strip(), str(obj["text"]).strip(), str(obj.get("title") or "").strip(),
                 str(obj.get("kind") or "").strip(), tuple(tags))


def load_entries(path: str | Path) -> list[Entry]:
    """The entries of a JSONL or YAML knowledge file (a recipe path or any path)."""
    from medsage.data_pipeline.synthesis.prompts import resolve

    p = resolve(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise KnowledgeError(p, "", f"cannot read: {err.strerror}") from None
    entries: list[Entry] = []
    if p.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise KnowledgeError(p, f":{n}", f"not valid JSON ({err.msg})") from None
                entries.append(_entry(obj, p, f":{n}"))
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise KnowledgeError(p, "", f"not valid YAML: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
            raise KnowledgeError(p, "", "expected a mapping with an 'entries' list (or use .jsonl)")
        entries = [_entry(obj, p, f" entry {i}") for i, obj in enumerate(data["entries"])]
    if not entries:
        raise KnowledgeError(p, "", "no entries")
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise KnowledgeError(p, "", f"entry id {e.id!r} appears twice")
        seen.add(e.id)
    return entries


class KnowledgeBase:
    """BM25 over the entries; ``retrieve`` returns the best ``k`` that share at least one term."""

    def __init__(self, entries: list[Entry]):
        from rank_bm25 import BM25Plus

        self.entries = entries
        self._docs = [set(e.document()) for e in entries]
        self._bm25 = BM25Plus([e.document() for e in entries])

    @classmethod
    def from_cfg(cls, cfg: dict | None) -> tuple["KnowledgeBase | None", int]:
        """From the recipe's ``knowledge_base`` node: (the base or None when no file is named, top_k)."""
        cfg = cfg or {}
        top_k = int(cfg.get("top_k", 3))
        if top_k < 1:
            raise ValueError(f"knowledge_base.top_k must be >= 1, got {top_k}")
        return (cls(load_entries(cfg["file"])) if cfg.get("file") else None), top_k

    def retrieve(self, query: str, k: int) -> list[Entry]:
        terms = tokens(query)
        if not terms:
            return []
        scores = self._bm25.get_scores(terms)
        ranked = sorted(range(len(self.entries)), key=lambda i: (-scores[i], i))
        return [self.entries[i] for i in ranked if self._docs[i] & set(terms)][:k]
