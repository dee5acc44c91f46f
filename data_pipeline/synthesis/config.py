"""The synthesis recipe (``recipes/synthesis/default.yaml``) typed as a whole, as ``medsage data synth run``
reads it: an unknown key, a wrong type or a ``???`` left unset fails with the key's path before any record
is read or any endpoint called (``medsage.config``). Each synthesizer still receives only its own keys,
typed by its ``Config`` (``rpa.synthesizer_section``); the endpoint is ``medsage.chat``'s ``ClientConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medsage.chat import ClientConfig
from medsage.prompts import PromptConfig


@dataclass
class EndpointConfig(ClientConfig):
    """The ``client`` node: a ``ClientConfig`` whose endpoint may stay null (the template synthesizer calls
    nothing; the llm synthesizer and the verifier refuse to start without one)."""

    base_url: str | None = None
    model: str | None = None

    def __post_init__(self) -> None:
        if self.base_url is not None:
            super().__post_init__()


@dataclass
class KnowledgeBaseConfig:
    file: str | None = None      # JSONL or YAML entries; None: no retrieval
    top_k: int = 3                  # entries handed to the knowledge stage


@dataclass
class VerifyConfig:
    mode: str                       # none | llm
    with_image: bool
    k: int                          # regenerations of a failed trajectory
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("none", "llm"):
            raise ValueError(f"verify.mode must be none or llm, got {self.mode!r}")
        if self.k < 0:
            raise ValueError(f"verify.k must be >= 0, got {self.k}")


@dataclass
class ProposalConfig:
    enabled: bool
    min_area: float
    max_area: float


@dataclass
class RpaConfig:
    mode: str                       # rpa | low_level
    low_level_copies: int
    roi_kinds: list[str]
    max_per_image: int
    max_rois: int | None = None
    max_templates: int | None = None
    target: int | None = None
    retry_share: float = 0.0        # share of SFT examples that are self-check retries (wrong τ1, <CHECK>, τ2)
    retry_request: str | None = None  # their self-check request; None: the RL loop's (synthesis/retry.py)

    def __post_init__(self) -> None:
        if self.mode not in ("rpa", "low_level"):
            raise ValueError(f"rpa.mode must be rpa or low_level, got {self.mode!r}")
        from medsage.data_pipeline.synthesis.retry import RetryConfig

        RetryConfig(self.retry_share, self.retry_request)  # its checks: share in [0, 1), a request not empty


@dataclass
class OutputConfig:
    sft: bool                       # write SAGE-sft as LLaVA JSON under <out>/sft
    sft_name: str                   # its dataset name in dataset_info.json


@dataclass
class SynthesisConfig:
    """recipes/synthesis/default.yaml as composed (the YAML says what each key is)."""

    synthesizer: str
    prompts_file: str
    templates_file: str
    knowledge_file: str
    seed: int
    client: EndpointConfig
    verify: VerifyConfig
    roi_proposal: ProposalConfig
    rpa: RpaConfig
    output: OutputConfig
    knowledge_base: KnowledgeBaseConfig | None = None
    prompt: PromptConfig | None = None   # the /prompt group; None: recipes/prompt/lvkc


def synthesis_recipe(cfg: Any, where: str = "recipes/synthesis/default.yaml") -> dict:
    """The composed recipe (DictConfig or dict) typed by ``SynthesisConfig``, as the complete plain dict
    ``run_synthesis`` reads. A key written in ``client`` or ``verify`` is refused, naming the variable to use."""
    from omegaconf import OmegaConf

    from medsage.config import checked
    from medsage.secrets import refuse_keys

    data = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True)
    for node in ("client", "verify"):
        refuse_keys(data.get(node) or {}, node)
    return OmegaConf.to_container(checked(SynthesisConfig, data, where), resolve=True)
