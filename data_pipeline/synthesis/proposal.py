"""RoI proposal for records without a region (§3.1, A.1, A.3.1): an LLM proposes, a second call verifies.

A record whose only RoI is the global one (no box, no text cue) would otherwise be reasoned over the
whole image alone. With the llm synthesizer and ``roi_proposal.enabled``:

1. ``propose`` (the synthesis model, image + question + the source caption when there is one) replies
   ``{"box_2d": [y1, x1, y2, x2], "label": ...}`` on the 0-1000 grid, or ``{"region": "<anatomical words>"}``;
   the box is read by ``medsage.scaffold`` and must cover between ``min_area`` and ``max_area`` of the image;
2. ``roi_check`` (the verifier model when there is one, else the synthesis model) sees the image, the
   crop for a box, the question and the region, and answers ``{"relevant": true|false, "reason": ...}``;
3. a verified region is added to the record's RoIs (origin ``llm-proposal``; the global RoI stays), and
   ``metadata["roi_proposal"]`` records who proposed it, who verified it and why; every kept trajectory
   on it carries a ``roi`` provenance entry. A region that fails is recorded there with its reason,
   and the record keeps the global RoI only.

The template synthesizer proposes nothing: its records keep the global RoI.
"""

from __future__ import annotations

import copy
import json

from medsage.chat import FATAL, CallError, ChatClient, Image, Message
from medsage.data_pipeline.synthesis.prompts import StagePrompt
from medsage.data_pipeline.synthesis.rpa import SynthesisError
from medsage.records import Provenance, RoI, Sample
from medsage.scaffold import parse_regions

ORIGIN = "llm-proposal"


def needs_proposal(sample: Sample) -> bool:
    """True for a record whose only region is the whole image."""
    return not any(r.kind in ("box", "text") for r in sample.rois)


def _image_size(sample: Sample) -> tuple[int, int]:
    size = sample.metadata.get("image_size")
    if size:
        return int(size[0]), int(size[1])
    from PIL import Image as PILImage

    with PILImage.open(sample.images[0]) as img:
        return img.size


def parse_proposal(text: str, width: int, height: int, min_area: float, max_area: float) -> RoI:
    """The proposed region as a record RoI (pixel box or text); ``SynthesisError`` when unusable."""
    from medsage.data_pipeline.synthesis.synthesizers.llm import parse_json_reply

    obj = parse_json_reply(text, "propose", ())
    if "box_2d" in obj:
        regions, issues = parse_regions(json.dumps({"box_2d": obj["box_2d"], "label": "proposed region"}))
        if issues or not regions:
            raise SynthesisError("propose_bad_box", issues[0].message if issues else "no box")
        box = regions[0].to_pixels(width, height)
        area = (box[2] - box[0]) * (box[3] - box[1]) / float(width * height)
        if not min_area <= area <= max_area:
            raise SynthesisError("propose_box_size", f"covers {area:.1%} of the image, outside "
                                                     f"{min_area:.1%}..{max_area:.0%}")
        label = str(obj.get("label") or "").strip() or "proposed region"
        return RoI("box", box=box, label=label, origin=ORIGIN)
    words = str(obj.get("region") or "").strip()
    if not words or any(c.isdigit() for c in words) or len(words.split()) > 30:
        raise SynthesisError("propose_malformed", "needs a box_2d or a short 'region' text without numbers")
    return RoI("text", text=words, label="proposed location", origin=ORIGIN)


class Proposer:
    """Proposes and verifies one region per RoI-less record; calls go through the run's cached clients."""

    def __init__(self, client: ChatClient, checker: ChatClient, prompts: dict[str, StagePrompt],
                 checker_model: str | None, cfg: dict):
        self.client, self.checker, self.checker_model = client, checker, checker_model
        self.propose_prompt, self.check_prompt = prompts["propose"], prompts["roi_check"]
        self.min_area, self.max_area = float(cfg.get("min_area", 0.001)), float(cfg.get("max_area", 0.9))

    async def _chat(self, client, prompt: StagePrompt, images, model=None, **values) -> str:
        system, user = prompt.render(**values)
        try:
            reply = await client.chat([Message("system", system), Message("user", user, tuple(images))],
                                      salt="roi-proposal", model=model)
        except CallError as err:
            if err.reason in FATAL:
                raise
            raise SynthesisError(f"call_failed:{err.reason}", err.detail) from None
        return reply.text

    async def propose(self, sample: Sample) -> Sample:
        """``sample`` with a verified proposed RoI added, or unchanged but for the recorded reason."""
        from medsage.data_pipeline.synthesis.synthesizers.llm import parse_json_reply

        out = copy.deepcopy(sample)
        full = Image.from_path(sample.images[0])
        caption = (sample.metadata.get("context") or {}).get("caption") or "none"
        checker = self.checker_model or self.checker.cfg.model
        record = {"made_by": f"llm:{self.client.cfg.model}", "verified_by": f"llm:{checker}"}
        try:
            text = await self._chat(self.client, self.propose_prompt, (full,), question=sample.prompt_text(),
                                    context=caption)
            roi = parse_proposal(text, *_image_size(sample), self.min_area, self.max_area)
            views = (full, Image.crop(sample.images[0], roi.box)) if roi.kind == "box" else (full,)
            where = "the box outlined by the second image (a crop of the first)" if roi.kind == "box" else roi.text
            verdict = parse_json_reply(await self._chat(self.checker, self.check_prompt, views, self.checker_model,
                                                        question=sample.prompt_text(), region=where),
                                       "roi_check", ("relevant",))
        except SynthesisError as err:
            out.metadata = {**out.metadata, "roi_proposal": {**record, "accepted": False, "reason": str(err)}}
            return out
        reason = str(verdict.get("reason", "")).strip()
        if verdict["relevant"] is not True:
            record.update(accepted=False, reason=f"roi_not_relevant: {reason}", kind=roi.kind)
            out.metadata = {**out.metadata, "roi_proposal": record}
            return out
        record.update(accepted=True, reason=reason, kind=roi.kind)
        # Before the global RoI, which stays (a record with no RoI at all had it implicitly: plan_units).
        out.rois = [roi, *(out.rois or [RoI("global", label="full image", origin="global")])]
        out.metadata = {**out.metadata, "roi_proposal": record}
        return out


def roi_provenance(sample: Sample, roi: RoI) -> list[Provenance]:
    """The ``roi`` provenance entry of a trajectory written on a proposed region (none otherwise)."""
    meta = sample.metadata.get("roi_proposal") or {}
    if roi.origin != ORIGIN or not meta.get("accepted"):
        return []
    return [Provenance(stage="roi", made_by=meta["made_by"],
                       detail=f"proposed {roi.kind} RoI, verified by {meta['verified_by']}: {meta.get('reason', '')}")]
