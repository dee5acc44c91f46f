"""Is a folder a model the stages can load? One answer, naming what is missing, before any engine is imported.

A wrong ``model.path`` otherwise surfaces as an engine's traceback minutes in ("need sentencepiece or tiktoken",
"Unrecognized model"), or, for a verl checkpoint folder, as a model built from the wrong files.
"""

from __future__ import annotations

import json
from pathlib import Path

# Each inner list: one of these files (transformers 5 folds the image processor into processor_config.json).
NEEDED = {
    "a model config": ["config.json"],
    "a tokenizer": ["tokenizer.json", "tokenizer_config.json", "vocab.json"],
    "an image processor": ["preprocessor_config.json", "processor_config.json"],
}


def looks_local(path: str) -> bool:
    """A path on this machine rather than a hub id (``Qwen/Qwen2.5-VL-7B-Instruct``)."""
    return path.startswith(("/", "./", "../", "~")) or Path(path).expanduser().exists()


def model_folder_problem(path: str | Path | None, key: str = "model.path") -> str | None:
    """Why ``path`` is not a loadable vision-language model folder, or None. Hub ids are the engine's to fetch."""
    text = "" if path is None else str(path).strip()
    if not text:
        return f"{key} is empty: set it to a model folder (e.g. the SFT run folder) or a hub id"
    if not looks_local(text):
        return None
    folder = Path(text).expanduser()
    if not folder.exists():
        return f"{key}={text}: no such folder"
    if not folder.is_dir():
        return f"{key}={text}: a file, not a model folder"
    for verl_hf in (folder / "actor" / "huggingface", folder / "huggingface"):
        if (verl_hf / "config.json").is_file() and not (folder / "config.json").is_file():
            return f"{key}={text}: a verl checkpoint folder; its Hugging Face model is {verl_hf}: use that as {key}"
    missing = [f"{what} ({' or '.join(names)})" for what, names in NEEDED.items()
               if not any((folder / n).is_file() for n in names)]
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        missing.append("weights (*.safetensors)")
    if missing:
        return f"{key}={text}: not a model folder: missing {', '.join(missing)}"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{key}={text}: config.json cannot be read ({err})"
    if not isinstance(config, dict) or "vision_config" not in config:
        kind = config.get("model_type", "?") if isinstance(config, dict) else "?"
        return (f"{key}={text}: a text-only model (model_type {kind!r}, no vision_config in config.json); "
                "medsage trains and evaluates vision-language models")
    return None
