"""From a benchmark item to the chat request every backend sends: the same prompt for all of them.

The text is ``medsage.prompts``' (``recipes/prompt/``), the very prompt the SFT and RL writers train
on. Images go before the text, followed by the same newline as Figure 6's ``<image>\n``, except where
the question places them with MMMU's ``<image N>`` placeholders: then image N stands there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medsage.prompts import IMAGE_SEPARATOR, PromptConfig, instruction_text
from medsage.records import Sample

__all__ = ["ChatRequest", "Part", "PromptConfig", "build_request"]

_IMAGE_REF_RE = re.compile(r"<image (\d+)>")


@dataclass(frozen=True)
class Part:
    kind: str  # "image" | "text"
    value: str  # image path or text


@dataclass(frozen=True)
class ChatRequest:
    """One user turn (images and text in order) and an optional system prompt; for a second attempt
    (``medsage.eval.retry``) the turns after it, ``(role, text)``, and the start of the reply the model continues."""

    id: str
    parts: tuple[Part, ...]
    system: str | None = None
    turns: tuple[tuple[str, str], ...] = ()
    reply_prefix: str = ""

    @property
    def images(self) -> list[str]:
        return [p.value for p in self.parts if p.kind == "image"]

    @property
    def text(self) -> str:
        return "".join(p.value for p in self.parts if p.kind == "text")


def build_request(sample: Sample, prompt: PromptConfig) -> ChatRequest:
    return ChatRequest(sample.id, _interleave(instruction_text(sample, prompt), sample.images), prompt.system)


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
        rest = text[pos:]
        if pos == 0 and parts:  # images first, then the text: the newline SFT and RL put after <image>
            rest = IMAGE_SEPARATOR + rest
        parts.append(Part("text", rest))
    return tuple(parts)
