"""PubMedVision (FreedomIntelligence), read as downloaded: ``PubMedVision_Alignment_VQA.json`` and
``PubMedVision_InstructionTuning_VQA.json`` (647,031 items each), each a JSON list of items with ``id``,
``image`` (a list of paths relative to the JSON's folder, ``images/...`` after unzipping
``images_*.zip`` with ``unzip -j``), ``conversations`` in ``from``/``value`` form, and the
``modality`` / ``body_part`` annotations added in 2024-07. Both files are read by default (whichever
are present); ``json_name`` picks one or a list.

One input per item; its first human turn (image placeholders removed) and first gpt turn are kept as
an open question. PubMedVision has no boxes, so the localisation cues written in the question or the
answer become text RoIs (Appendix A.1, weak grounding): laterality with an anatomical site ("right
lower lobe"), positional phrases ("upper pole of the left kidney"), and arrow references
("white arrow", "arrowheads"). These are plain-text cues, not scaffold tags.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medsage.data_pipeline.sources.base import (InputRejected, SourceItem, file_stamp, inside_root,
                                                read_annotation_json, safe_id)
from medsage.records import RoI
from medsage.vocab import IMAGE_PLACEHOLDER

_SIDE = r"(?:left|right|bilateral|contralateral|ipsilateral)"
_POSITION = (r"(?:upper|lower|middle|mid|anterior|posterior|medial|lateral|superior|inferior|apical|basal|"
             r"proximal|distal)")
_SITE = (r"(?:lobes?|lungs?|hemithorax|kidneys?|adrenal|breasts?|ovary|ovaries|hip|knee|shoulder|femur|humerus|"
         r"hemisphere|ventricles?|atrium|pleural|parotid|thyroid|lobe|quadrant|pole|frontal|parietal|temporal|"
         r"occipital|cerebell\w+|maxillary|orbit|liver|hepatic|renal|pulmonary|abdomen|pelvis|chest|neck)")
# "left lower lobe", "right kidney", "upper pole of the left kidney", "posterior segment"
_ANATOMY_RE = re.compile(
    rf"\b(?:{_SIDE}\s+(?:{_POSITION}\s+)?{_SITE}|{_POSITION}\s+(?:{_SITE}|pole|segment|aspect)(?:\s+of\s+the\s+{_SIDE}\s+{_SITE})?)\b",
    re.IGNORECASE)
_ARROW_RE = re.compile(r"\b(?:(?:white|black|red|yellow|blue|green|thin|thick|curved|open)\s+)?"
                       r"(?:arrows?|arrowheads?|asterisks?)\b(?:\s*\([^)]{1,40}\))?", re.IGNORECASE)
_IMAGE_TOKEN_RE = re.compile(re.escape(IMAGE_PLACEHOLDER) + r"\s*")
PUBLISHED_FILES = ("PubMedVision_Alignment_VQA.json", "PubMedVision_InstructionTuning_VQA.json")
_SHORT = dict(zip(PUBLISHED_FILES, ("alignment", "instruction")))


def text_cues(*texts: str) -> list[RoI]:
    """Text RoIs for the localisation cues in ``texts``, first occurrence order, no repeats."""
    seen: dict[str, RoI] = {}
    for text in texts:
        for pattern, label in ((_ANATOMY_RE, "anatomical location"), (_ARROW_RE, "arrow reference")):
            for m in pattern.finditer(text or ""):
                phrase = " ".join(m.group(0).split())
                if phrase.lower() not in seen:
                    seen[phrase.lower()] = RoI("text", text=phrase, label=label, origin="text-cue")
    return list(seen.values())


class PubMedVisionSource:
    """``root`` is the folder of the JSON files; ``json_name`` one file name or a list (default: both published)."""

    name = "pubmedvision"
    labels: list[str] = []
    modality = None

    def __init__(self, root: str | Path, image_dir: str | Path, json_name: str | list[str] | None = None):
        self.root = Path(root)
        names = [json_name] if isinstance(json_name, str) else list(json_name or [])
        if not names:
            names = [n for n in PUBLISHED_FILES if (self.root / n).is_file()] or [PUBLISHED_FILES[0]]
        self.items = {}
        for name in names:
            path = self.root / name
            items = read_annotation_json(path, "PubMedVision JSON")
            if not isinstance(items, list):
                raise ValueError(f"{path}: expected a JSON list of items, got {type(items).__name__}")
            # Keys name the file when several are read: the same id occurs in both published files.
            prefix = f"{_SHORT.get(name, Path(name).stem)}-" if len(names) > 1 else ""
            for i, item in enumerate(items):
                ident = item.get("id") if isinstance(item, dict) else None
                ident = safe_id(str(ident)) if isinstance(ident, (str, int)) and not isinstance(ident, bool) else None
                self.items[f"{prefix}{i:07d}-{ident}" if ident else f"{prefix}{i:07d}"] = (path, i, item)

    def inputs(self) -> list[str]:
        return list(self.items)

    def stamp(self, key: str):
        _, index, item = self.items[key]
        images = item.get("image") if isinstance(item, dict) else None
        images = [images] if isinstance(images, str) else images if isinstance(images, list) else []
        return [json.dumps(item, sort_keys=True, default=str),
                [file_stamp(self.root / p) if isinstance(p, str) and "\x00" not in p else None for p in images]]

    def load(self, key: str) -> SourceItem:
        path, index, item = self.items[key]
        where = f"{path.name} item {index}"
        if not isinstance(item, dict):
            raise InputRejected("bad-annotation", f"{where}: not a JSON object")
        images = item.get("image")
        images = [images] if isinstance(images, str) else images
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
            raise InputRejected("unreadable-image", f"{where}: `image` must be a non-empty list of paths")
        turns = item.get("conversations")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise InputRejected("bad-annotation", f"{where}: `conversations` must be a list of from/value objects")
        human = next((t.get("value") for t in turns if t.get("from") == "human"), None)
        gpt = next((t.get("value") for t in turns if t.get("from") == "gpt"), None)
        if not (isinstance(human, str) and isinstance(gpt, str)) or not gpt.strip():
            raise InputRejected("bad-annotation", f"{where}: needs a human turn and a non-empty gpt turn")
        question = _IMAGE_TOKEN_RE.sub("", human).strip()
        if not question:
            raise InputRejected("bad-annotation", f"{where}: the human turn has no text besides <image>")
        paths = [str(inside_root(self.root, p, f"{where} image")) for p in images]
        metadata = {"item_index": index, "file": path.name,
                    **{k: item[k] for k in ("id", "body_part") if isinstance(item.get(k), str)}}
        return SourceItem(
            key=key, images=paths, rois=text_cues(question, gpt),
            modality=item.get("modality") if isinstance(item.get("modality"), str) else None,
            question=question, answer=gpt.strip(), metadata=metadata,
        )
