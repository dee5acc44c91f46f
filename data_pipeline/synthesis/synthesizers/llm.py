"""The stage-wise LLM synthesizer (§3.1 Eq. 2-6, A.3.4) over any OpenAI-compatible endpoint.

For a unit (record, RoI r, template t):
  loc        = f_loc(I, q, hint(r))                 anatomical words; the scaffold appends box_2d
  Vis(r)     = f_vis(I, crop(I, r), q, loc)          Eq. 2: the full image and the RoI crop
  K          = retrieve(q, label, Vis(r), t)         A.3.4: entries of the knowledge base (BM25)
  Know(r, t) = f_know(Vis(r), t, label, K)           Eq. 3-4: one interpretation template
  Out(r, t)  = f_out(Vis(r), Know(r, t), y)          Eq. 5: conclusion and answer, given y
  tau(r, t)  = scaffold(loc, Vis, Know, Out)         Eq. 6: rendered by medsage.scaffold
loc and Vis depend on r only, so the cache answers them once for all templates of a RoI. Each
regeneration attempt is salted into the cache key, so a retry really asks again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from medsage.chat import FATAL, CallError, ChatClient, Image, Message
from medsage.data_pipeline.synthesis.knowledge import KnowledgeBase
from medsage.data_pipeline.synthesis.leaks import guidance_label, reference_answer
from medsage.data_pipeline.synthesis.prompts import load_prompts, load_templates
from medsage.data_pipeline.synthesis.rpa import Draft, SynthesisError, Unit, with_region
from medsage.records import Provenance
from medsage.scaffold import Trajectory

NAME = "llm"


def roi_hint(unit: Unit) -> str:
    """The private region cue of the localization prompt (Figure 8 input 3)."""
    roi = unit.roi
    if roi.kind == "text":
        return f"the source text refers to '{roi.text}'"
    if unit.whole_image:
        return "the whole image"
    w, h = unit.image_size()
    x1, y1, x2, y2 = roi.box
    label = f", annotated as '{roi.label}'" if roi.label else ""
    return f"pixel box x {x1:.0f}-{x2:.0f}, y {y1:.0f}-{y2:.0f} of a {w}x{h} image{label}"


def parse_json_reply(text: str, stage: str, keys: tuple[str, ...]) -> dict:
    """The first JSON object in a reply (models wrap it in prose or code fences) with ``keys``."""
    start = text.find("{")
    if start == -1:
        raise SynthesisError(f"{stage}_malformed", "no JSON object in the reply")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as err:
        raise SynthesisError(f"{stage}_malformed", f"invalid JSON ({err.msg})") from None
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        raise SynthesisError(f"{stage}_malformed", f"JSON lacks {list(keys)}")
    return obj


class LLMSynthesizer:
    """Each stage by one chat call; prompts from ``prompts_file``, templates from ``templates_file``."""

    name = NAME

    @dataclass
    class Config:
        """The synthesis recipe's keys this synthesizer reads (recipes/synthesis/default.yaml)."""

        prompts_file: str                                   # the stage prompts
        templates_file: str                                 # the question templates T
        knowledge_base: dict[str, Any] | None = None        # {file, top_k}: retrieval for knowledge matching

    def __init__(self, cfg: Config, client: ChatClient | None):
        if client is None:
            raise ValueError("the llm synthesizer needs a client (set client.base_url and client.model)")
        self.client = client
        self.prompts = load_prompts(cfg.prompts_file)
        self.templates = load_templates(cfg.templates_file)
        self.knowledge, self.top_k = KnowledgeBase.from_cfg(cfg.knowledge_base)

    async def _ask(self, stage: str, images: tuple[Image, ...], salt: str, **values: str) -> str:
        system, user = self.prompts[stage].render(**values)
        try:
            reply = await self.client.chat([Message("system", system), Message("user", user, images)], salt=salt)
        except CallError as err:
            if err.reason in FATAL:  # a wrong key, model or URL: stop the run, do not reject every unit
                raise
            raise SynthesisError(f"call_failed:{err.reason}", f"{stage}: {err.detail}") from None
        return reply.text.strip()

    async def draft(self, unit: Unit, attempt: int = 0) -> Draft:
        if unit.template not in self.templates:
            raise SynthesisError("unknown_template", unit.template)
        sample, salt = unit.sample, f"attempt{attempt}"
        question = sample.prompt_text()
        full = Image.from_path(sample.images[0])
        loc = await self._ask("loc", (full,), salt, question=question, roi_hint=roi_hint(unit))
        views = (full,)
        if unit.crop_box is not None:
            views = (full, Image.crop(sample.images[0], unit.crop_box))  # Eq. 2: global context + RoI evidence
        caption = (sample.metadata.get("context") or {}).get("caption") or "none"  # short_qa keeps it
        vis = await self._ask("vis", views, salt, question=question, roi_summary=loc, context=caption)
        angle, label = self.templates[unit.template], guidance_label(sample)
        retrieved = (self.knowledge.retrieve(" ".join([question, label, vis, angle]), self.top_k)
                     if self.knowledge else [])
        know = await self._ask("know", (), salt, question=question, visual_summary=vis, template=angle,
                               label=label, retrieved="\n".join(e.line() for e in retrieved) or "none")
        out = parse_json_reply(await self._ask("con", (), salt, question=question, visual_summary=vis,
                                               knowledge=know, answer=reference_answer(sample)),
                               "con", ("conclusion", "answer"))
        con, answer = str(out["conclusion"]).strip(), str(out["answer"]).strip()
        if not con or not answer:
            raise SynthesisError("con_malformed", "empty conclusion or answer")
        model = self.client.cfg.model
        detail = f"template={unit.template}"
        provenance = [Provenance(stage=s, made_by=f"{NAME}:{model}", detail=detail) for s in ("loc", "vis", "con")]
        provenance.insert(2, Provenance(stage="know", made_by=f"{NAME}:{model}",
                                        detail=f"{detail}; knowledge={','.join(e.id for e in retrieved) or 'none'}"))
        return Draft(Trajectory(loc=with_region(loc, unit.region()), vis=vis, know=know, con=con, answer=answer),
                     loc, provenance)
