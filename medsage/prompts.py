"""The one prompt the model sees, in SFT, in RL and in evaluation alike (paper A.2, Figure 6).

Figure 6's human turn is ``<image>\\n<Instructions>``: the image placeholders, a newline, then the
instruction text. The instruction text comes from one recipe group, ``recipes/prompt/`` (``lvkc``
by default): a ``template`` with ``{question}``, ``{options}`` and ``{instruction}`` (one line per
question type) and an optional system turn. The SFT writer, the RL writers and every evaluation
backend render it here, so a model is evaluated with the very prompt it was trained on.

It lives in ``medsage/`` (beside the records it reads) so data_pipeline, plugins and eval can all
import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medsage.records import Sample
from medsage.vocab import IMAGE_PLACEHOLDER
# Between the image placeholders and the instruction text (Figure 6: "<image>\n<Instructions>").
IMAGE_SEPARATOR = "\n"
DEFAULT_PROMPT = "lvkc"

# The self-check request of the retry (§3.3): the user turn the RL loop inserts after a wrong τ1
# (``plugins/self_check/loop.py``) and the one the SFT retry rows carry (``data_pipeline/synthesis/retry.py``),
# so SFT teaches the very request RL sends. ``rl.request`` / ``rpa.retry_request`` override it (null: this text).
SELF_CHECK_REQUEST = (
    "Your answer may be wrong. Check your reasoning along three dimensions: visual grounding (is the "
    "localised region right?), visual analysis (are the findings read correctly?) and knowledge "
    "consistency (does the medical knowledge support the conclusion?). Write the check, close it, then "
    "give a revised full reasoning trajectory in the same stage format and a final answer."
)


@dataclass
class PromptConfig:
    """One ``recipes/prompt/<name>.yaml``: the instruction template and the system turn."""

    template: str = "{question}\n{options}{instruction}"
    instructions: dict[str, str] = field(default_factory=dict)  # question type -> instruction line
    system: str | None = None
    options_header: str = "Options:\n"

    @classmethod
    def from_cfg(cls, cfg, where: str = "recipes/prompt") -> "PromptConfig":
        """From a composed ``prompt`` node (DictConfig or dict), typed by OmegaConf: unknown keys are an error."""
        from medsage.config import typed

        return typed(cls, cfg, where, prefix="prompt.")

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_PROMPT) -> "PromptConfig":
        """``recipes/prompt/<name>.yaml`` by name, or a YAML file by path (for commands without Hydra)."""
        from omegaconf import OmegaConf

        from medsage.recipes import recipes_dir

        p = Path(name_or_path)
        if p.suffix not in (".yaml", ".yml"):
            p = recipes_dir() / "prompt" / f"{name_or_path}.yaml"
        if not p.is_file():
            names = sorted(f.stem for f in (recipes_dir() / "prompt").glob("*.yaml"))
            raise ValueError(f"prompt {name_or_path!r}: no file {p} (recipes/prompt has {names})")
        return cls.from_cfg(OmegaConf.load(p), str(p))


def instruction_text(sample: Sample, prompt: PromptConfig) -> str:
    """The text of the human turn, without image placeholders: question, options, instruction."""
    options = ""
    if sample.options:
        options = prompt.options_header + "".join(f"{k}. {v}\n" for k, v in sorted(sample.options.items()))
    return prompt.template.format(question=sample.question, options=options,
                                  instruction=prompt.instructions.get(sample.question_type, ""))


def human_turn(sample: Sample, prompt: PromptConfig) -> str:
    """Figure 6's human value: one ``<image>`` per image, a newline, the instruction text."""
    if not sample.images:
        raise ValueError(f"sample {sample.id}: has no image")
    text = instruction_text(sample, prompt)
    if IMAGE_PLACEHOLDER in text:
        raise ValueError(f"sample {sample.id}: question already contains {IMAGE_PLACEHOLDER!r}")
    return IMAGE_PLACEHOLDER * len(sample.images) + IMAGE_SEPARATOR + text
