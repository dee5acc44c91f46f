"""From a benchmark item to the chat request every backend sends: the same prompt for all of them.

The prompt comes from the recipe (``recipes/eval/prompt/*.yaml``): a template with ``{question}``,
``{options}`` and ``{instruction}`` (one per question type). Images go before the text, except where
the question places them with MMMU's ``<image N>`` placeholders: then image N stands there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from medsage.records import Sample

_IMAGE_REF_RE = re.compile(r"<image (\d+)>")


@dataclass(frozen=True)
class Part:
    kind: str  # "image" | "text"
    value: str  # image path or text


@dataclass(frozen=True)
class ChatRequest:
    """One user turn (images and text in order) and an optional system prompt."""

    id: str
    parts: tuple[Part, ...]
    system: str | None = None

    @property
    def images(self) -> list[str]:
        return [p.value for p in self.parts if p.kind == "image"]

    @property
    def text(self) -> str:
        return "".join(p.value for p in self.parts if p.kind == "text")


@dataclass
class PromptConfig:
    template: str = "{question}\n{options}{instruction}"
    instructions: dict[str, str] = field(default_factory=dict)  # question type -> instruction line
    system: str | None = None
    options_header: str = "Options:\n"

    @classmethod
    def from_cfg(cls, cfg) -> "PromptConfig":
        return cls(template=str(cfg.template), instructions=dict(cfg.instructions),
                   system=cfg.get("system"), options_header=str(cfg.get("options_header", "Options:\n")))


def build_request(sample: Sample, prompt: PromptConfig) -> ChatRequest:
    options = ""
    if sample.options:
        options = prompt.options_header + "".join(f"{k}. {v}\n" for k, v in sorted(sample.options.items()))
    text = prompt.template.format(question=sample.question, options=options,
                                  instruction=prompt.instructions.get(sample.question_type, ""))
    return ChatRequest(sample.id, _interleave(text, sample.images), prompt.system)


def _interleave(text: str, images: list[str]) -> tuple[Part, ...]:
    refs = [int(n) for n in _IMAGE_REF_RE.findall(text)]
    placed = {n for n in refs if 1 <= n <= len(images)}
    # Images the text does not place come first, in order (the usual single-image layout).
    parts = [Part("image", p) for k, p in enumerate(images, 1) if k not in placed]
    pos = 0
    used: set[int] = set()
    for m in _IMAGE_REF_RE.finditer(text):
        n = int(m.group(1))
        if n not in placed or n in used:  # a second mention stays as text: each image is sent once
            continue
        if m.start() > pos:
            parts.append(Part("text", text[pos:m.start()]))
        parts.append(Part("image", images[n - 1]))
        used.add(n)
        pos = m.end()
    if pos < len(text):
        parts.append(Part("text", text[pos:]))
    return tuple(parts)
