"""What verl will keep of an RL parquet: each row's prompt length, counted as verl 0.9.1 counts it.

verl's ``RLHFDataset`` drops every row whose prompt (chat template, text and image tokens) is longer than
``data.max_prompt_length`` when ``data.filter_overlong_prompts`` is on (``medsage rl`` turns it on), and
says no more than ``filter dataset len: N``. ``medsage rl`` refuses such a dataset before launching,
naming how many rows and why (``check_prompt_lengths``).

A row's length is the tokenizer's count of the chat template with one ``<|image_pad|>`` per image, plus
each image's own tokens minus that placeholder. An image's tokens follow from its header size alone:
verl's loader (qwen-vl-utils' ``fetch_image``) resizes it into the row's ``min_pixels`` / ``max_pixels``
(qwen-vl-utils' defaults, up to 16,384 tokens, when the row has none), then the model's image processor
resizes it into its own bounds (``medsage.images.vision_size``, the same rule, twice); one token per
merge x merge block of patches. ``tests/plugins/test_rl_data.py`` checks the count against the
processor and the verdict against verl's own ``RLHFDataset``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from medsage.images import PixelBounds, image_size, vision_size

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class PromptLength:
    """One row's prompt as verl will see it."""

    index: int
    row_id: str
    text_tokens: int           # chat template and text, image placeholders excluded
    image_tokens: list[int]    # per image, as the vision encoder gets it
    image_sizes: list[tuple[int, int]]

    @property
    def tokens(self) -> int:
        return self.text_tokens + sum(self.image_tokens)


def _loader_bounds(entry: dict, factor: int) -> PixelBounds:
    """The bounds verl's image loader resizes an image entry into: the row's own, else qwen-vl-utils' defaults."""
    if entry.get("min_pixels") and entry.get("max_pixels"):
        return PixelBounds(int(entry["min_pixels"]), int(entry["max_pixels"]))
    from qwen_vl_utils.vision_process import IMAGE_MAX_TOKEN_NUM, IMAGE_MIN_TOKEN_NUM

    return PixelBounds(int(entry.get("min_pixels") or IMAGE_MIN_TOKEN_NUM * factor ** 2),
                       int(entry.get("max_pixels") or IMAGE_MAX_TOKEN_NUM * factor ** 2))


class PromptCounter:
    """Counts verl prompt lengths for one model's processor (a Qwen2-VL-family processor)."""

    def __init__(self, processor):
        image_processor = processor.image_processor
        self.processor = processor
        self.patch, self.merge = int(image_processor.patch_size), int(image_processor.merge_size)
        size = image_processor.size
        self.processor_bounds = PixelBounds(int(size["shortest_edge"]), int(size["longest_edge"]))
        self.pad_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)

    def image_tokens(self, entry: dict) -> tuple[int, tuple[int, int]]:
        """(tokens, original size) of one image entry of a verl row (``{"image": path} | {"bytes": ...}``)."""
        factor = self.patch * self.merge
        source = entry.get("bytes") or entry.get("image")
        width, height = image_size(source)
        loaded = vision_size(width, height, _loader_bounds(entry, factor), factor)
        w, h = vision_size(*loaded, self.processor_bounds, factor)
        return (w // factor) * (h // factor), (width, height)

    def messages(self, row: dict) -> list[dict]:
        """The row's chat with each ``<image>`` as an image part, as verl builds it for the chat template."""
        if not row.get("images"):
            return list(row["prompt"])
        out = []
        for message in row["prompt"]:
            parts = [p for p in re.split(f"({re.escape(IMAGE_PLACEHOLDER)})", message["content"]) if p]
            out.append({**message, "content": [{"type": "image"} if p == IMAGE_PLACEHOLDER else {"type": "text", "text": p}
                                               for p in parts]})
        return out

    def length(self, index: int, row: dict) -> PromptLength:
        text = self.processor.apply_chat_template(self.messages(row), add_generation_prompt=True, tokenize=False)
        ids = self.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
        counted = [self.image_tokens(dict(entry)) for entry in row.get("images") or []]
        return PromptLength(index, str((row.get("extra_info") or {}).get("id", index)),
                            len(ids) - ids.count(self.pad_id), [t for t, _ in counted], [s for _, s in counted])


def prompt_lengths(path: str | Path, processor) -> list[PromptLength]:
    """Every row's prompt length in one verl parquet file."""
    import pyarrow.parquet as pq

    counter = PromptCounter(processor)
    return [counter.length(i, row) for i, row in enumerate(pq.read_table(str(path)).to_pylist())]


def overlong_report(path: str | Path, lengths: list[PromptLength], limit: int, shown: int = 5) -> str | None:
    """None when every row fits ``limit``; else a message naming how many rows verl would drop and why."""
    over = [r for r in lengths if r.tokens > limit]
    if not over:
        return None
    worst = sorted(over, key=lambda r: -r.tokens)[:shown]
    lines = [f"  row {r.index} (id {r.row_id}): {r.tokens} tokens = {r.text_tokens} text + "
             + " + ".join(f"{t} for a {w}x{h} image" for t, (w, h) in zip(r.image_tokens, r.image_sizes))
             for r in worst]
    longest = max(r.tokens for r in over)
    return (f"{path}: {len(over)} of {len(lengths)} rows are longer than rl.max_prompt_length={limit} tokens, and "
            f"verl's filter_overlong_prompts would drop them with only a count printed. The longest:\n"
            + "\n".join(lines)
            + f"\nRebuild the rows with pixel bounds that fit (medsage data synth rl --model <name> sets the model "
              f"recipe's image_max_pixels and sets over-long rows aside with their reason), or raise "
              f"rl.max_prompt_length to {longest}.")


def steps_report(paths: list[str], rows: int, batch: int, epochs: int, planned: int | None) -> str | None:
    """None when verl's train loader gives ``planned`` steps (``trainer.total_training_steps``; None: whatever
    the epochs give); else what stops the run short.

    verl 0.9.1's train loader drops the last partial batch, and its trainer's loop ends with the epochs even when
    ``total_training_steps`` asks for more: it exits 0 at step ``rows // batch * epochs``, without the checkpoint
    of the last step, which is saved only at ``total_training_steps`` or a multiple of ``save_freq``.
    """
    per_epoch = rows // batch
    files = ", ".join(map(str, paths))
    if per_epoch == 0:
        return (f"{files}: {rows} rows, fewer than one step's {batch} prompts (rl.rollout_batch_prompts): verl's "
                f"loader drops a partial batch and would have nothing to train on")
    if planned is None or planned <= per_epoch * epochs:
        return None
    steps = f"{per_epoch} step{'s' * (per_epoch != 1)}"
    return (f"trainer.total_training_steps={planned}, but {files} has {rows} rows: {steps} of {batch} prompts an epoch, "
            f"{per_epoch * epochs} in rl.epochs={epochs}. verl would stop there and exit 0, "
            f"without the checkpoint of its last step. Set rl.epochs={-(-planned // per_epoch)} (or more), or "
            f"lower trainer.total_training_steps to {per_epoch * epochs}.")
