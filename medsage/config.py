"""One typed-config style for every stage: a recipe section checked against the stage's dataclass by
OmegaConf (``OmegaConf.structured``), so an unknown key, a wrong type or a ``???`` left unset fails with
the key's full path, before anything runs. Value checks stay in the dataclass's ``__post_init__``.

    cfg = typed(RunConfig, composed_recipe, "recipes/data/sage_pool.yaml")

Engines' own arguments are not re-declared here: the SFT and RL adapters hand their sections to
LLaMA-Factory's and verl's own argument classes (plugins/engines/).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe section that does not fit its dataclass; the message names where and which key."""


def _override_key(full_key: str) -> str:
    """OmegaConf's ``sources[0].root`` as a Hydra override names it: ``sources.0.root``."""
    return re.sub(r"\[(\d+)\]", r".\1", full_key or "")


def typed(schema: type[T], data: Mapping[str, Any] | Any, where: str, prefix: str = "") -> T:
    """``data`` (a dict or DictConfig) as an instance of the dataclass ``schema``, checked by OmegaConf;
    ``prefix`` is the section's own key in the recipe (``eval.``), for the messages."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), data))
    except MissingMandatoryValue as err:
        key = prefix + _override_key(err.full_key)
        raise ConfigError(f"{where}: {key} is required (???): set {key}=...") from None
    except OmegaConfBaseException as err:
        reason = str(err).splitlines()[0]
        raise ConfigError(f"{where}: {prefix + _override_key(err.full_key) if err.full_key else prefix or 'top level'}: {reason}") from None
    except (TypeError, ValueError) as err:  # a dataclass's own __post_init__ check
        raise ConfigError(f"{where}: {err}") from None
