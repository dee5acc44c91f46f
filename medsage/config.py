"""One typed-config style for every stage: a recipe section checked against the stage's dataclass by
OmegaConf (``OmegaConf.structured``), so an unknown key, a wrong type or a ``???`` left unset fails with
the key's full path, before anything runs. Value checks stay in the dataclass's ``__post_init__``.

    cfg = typed(RunConfig, composed_recipe, "recipes/data/sage_pool.yaml")      # the dataclass instance
    cfg = checked(RLRecipe, composed_recipe, "recipes/rl.yaml")                 # a typed DictConfig

``checked`` is for stages that hand their sections on to an engine as OmegaConf nodes (``medsage rl``).
The recipe groups several stages share (``model/``, ``cluster/``) are typed here too. Engines' own
arguments are not re-declared: the SFT and RL adapters hand those to LLaMA-Factory's and verl's own
argument classes (plugins/engines/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe section that does not fit its dataclass; the message names where and which key."""


def _override_key(full_key: str) -> str:
    """OmegaConf's ``sources[0].root`` as a Hydra override names it: ``sources.0.root``."""
    return re.sub(r"\[(\d+)\]", r".\1", full_key or "")


@contextmanager
def _errors(where: str, prefix: str) -> Iterator[None]:
    """OmegaConf's and the dataclasses' errors as one ``ConfigError`` naming ``where`` and the key."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        yield
    except MissingMandatoryValue as err:
        key = prefix + _override_key(err.full_key)
        raise ConfigError(f"{where}: {key} is required (???): set {key}=...") from None
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(f"{where}: {prefix + _override_key(err.full_key) if err.full_key else prefix or 'top level'}: {reason}") from None
    except (TypeError, ValueError) as err:  # a dataclass's own __post_init__ check
        raise ConfigError(f"{where}: {err}") from None


def typed(schema: type[T], data: Mapping[str, Any] | Any, where: str, prefix: str = "") -> T:
    """``data`` (a dict or DictConfig) as an instance of the dataclass ``schema``, checked by OmegaConf;
    ``prefix`` is the section's own key in the recipe (``eval.``), for the messages."""
    from omegaconf import OmegaConf

    with _errors(where, prefix):
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))


def checked(schema: type, data: Mapping[str, Any] | Any, where: str, prefix: str = ""):
    """``data`` checked exactly as ``typed`` checks it, returned as a DictConfig backed by ``schema``:
    attribute access and OmegaConf's container functions keep working, and a later assignment is
    type-checked too."""
    from omegaconf import OmegaConf

    with _errors(where, prefix):
        cfg = OmegaConf.merge(OmegaConf.structured(schema), data)
        OmegaConf.to_object(cfg)  # the ??? values and the __post_init__ checks
    return cfg


# --------------------------------------------------------------------------------------------
# recipe groups shared by the stages
# --------------------------------------------------------------------------------------------
ATTENTION = ("auto", "flash_attention_2", "sdpa", "eager")  # model.attn_implementation's values


@dataclass
class ModelConfig:
    """One ``recipes/model/<name>.yaml``: the model a stage trains or evaluates."""

    name: str                      # short name used in run folders and reports
    path: str                      # Hugging Face id or local folder
    template: str                  # LLaMA-Factory chat template
    image_max_pixels: int
    image_min_pixels: int
    # auto | flash_attention_2 | sdpa | eager, for every engine that loads the model (LLaMA-Factory, verl's actor
    # and reference, the hf eval backend); auto: flash_attention_2 where flash_attn imports in the stage's
    # environment, else sdpa (medsage.launch.preflight.resolve_attention)
    attn_implementation: str
    # `medsage tiny-model` sizes for a model the pipeline builds (recipes/model/tiny*.yaml); {} otherwise
    build: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.attn_implementation not in ATTENTION:
            raise ValueError(f"model.attn_implementation must be one of {', '.join(ATTENTION)}, "
                             f"got {self.attn_implementation!r}")


@dataclass
class EnvsConfig:
    """A Python environment (virtualenv folder) per stage; None: this interpreter."""

    data: str | None = None
    sft: str | None = None
    rl: str | None = None
    eval: str | None = None


@dataclass
class ClusterConfig:
    """One ``recipes/cluster/<name>.yaml``: where the stages run."""

    name: str
    accelerator: str               # cpu | gpu
    nnodes: int
    gpus_per_node: int
    ray_address: str | None = None
    envs: EnvsConfig = field(default_factory=EnvsConfig)

    def __post_init__(self) -> None:
        if self.accelerator not in ("cpu", "gpu"):
            raise ValueError(f"cluster.accelerator must be cpu or gpu, got {self.accelerator!r}")
        if self.nnodes < 1 or self.gpus_per_node < 0:
            raise ValueError(f"cluster {self.name}: nnodes must be >= 1 and gpus_per_node >= 0")
