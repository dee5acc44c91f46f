"""medsage's Hydra recipes (this folder, installed as ``medsage.recipes``) and how to compose them.

Every stage command (``medsage sft|rl|eval ...``) takes Hydra overrides after its own flags and
calls ``compose(<stage root>, overrides)``; ``extra_dirs`` lets a lab add its own config groups
without touching medsage (Hydra's search path).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


# What Hydra's override grammar reads unquoted as the same string: ASCII only (a letter such as ü is no token of it).
_BARE = re.compile(r"[A-Za-z_/.][\w./\-]*", re.ASCII)
# In a quoted value Hydra reads a backslash as itself except before a quote or at the end, and OmegaConf reads
# ``${`` as an interpolation: exactly those are escaped.
_QUOTED_ESCAPES = re.compile(r"(\\*)('|\$\{|\Z)")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def hydra_value(v: Any) -> str:
    """A Python value in Hydra's override grammar, composed back (Hydra, then OmegaConf) as the same value: None ->
    null, a string Hydra would not read unquoted as itself (spaces, brackets, ü, quotes) quoted (``${hv:...}`` in
    stage commands, the stage folders of the pipeline's commands, the verl overrides of ``medsage rl``)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    s = str(v)
    if _BARE.fullmatch(s) and s.lower() not in ("true", "false", "null", "nan", "inf") and not _NUMBER.fullmatch(s):
        return s
    return "'" + _QUOTED_ESCAPES.sub(lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), s) + "'"


def _stage_cluster(cluster) -> str:
    """``cluster=${stage_cluster:${cluster}}``: the pipeline's whole cluster as the value of one override of a stage
    command, so every ``cluster.*`` key given to ``medsage pipeline`` (``cluster.gpus_per_node=8``) reaches the stage.

    The Ray address is left out (null): a stage runs as a job of that cluster, and its own Ray calls (verl, the
    SFT's per-node launch) join it through the job's ``RAY_ADDRESS``; so the address is not part of a stage's key.
    """
    from omegaconf import OmegaConf

    value = OmegaConf.to_container(cluster, resolve=True) if OmegaConf.is_config(cluster) else dict(cluster)
    value["ray_address"] = None
    return hydra_value(value)


def _layout_name(ref: str) -> str:
    """``${layout:launch.SFT_FIRST_RUN}``: a name from ``medsage.<package>.layout``, the module where the
    stage that writes the file declares it (data_pipeline/layout.py, eval/layout.py, launch/layout.py)."""
    import importlib

    package, _, name = ref.rpartition(".")
    try:
        return str(getattr(importlib.import_module(f"medsage.{package}.layout"), name))
    except (ImportError, AttributeError) as err:
        raise ValueError(f"${{layout:{ref}}}: no such name in medsage.{package}.layout ({err})") from None


def recipe_value(recipe: str, key: str) -> Any:
    """``${recipe:rl/rgrpo,alpha}``: ``key`` (dotted for a nested one) as the recipe file
    ``<recipes>/rl/rgrpo.yaml`` writes it, so a config takes another recipe's default instead of repeating
    it (the pipeline's α is rl/rgrpo.yaml's)."""
    import yaml

    path = recipes_dir() / f"{recipe}.yaml"
    node = yaml.safe_load(path.read_text()) if path.is_file() else None
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"${{recipe:{recipe},{key}}}: {path} has no {key!r}")
        node = node[part]
    return node


def register_resolvers() -> None:
    """``${hv:...}``: stage commands in recipes/stages/ pass recipe values on as Hydra overrides.
    ``${stage_cluster:...}``: the pipeline's cluster, as a stage command receives it.
    ``${layout:...}``: the file names a stage writes, as its layout module declares them.
    ``${recipe:...}``: a value one recipe file declares (``recipe_value``)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("hv", hydra_value, replace=True)
    OmegaConf.register_new_resolver("stage_cluster", _stage_cluster, replace=True)
    OmegaConf.register_new_resolver("layout", _layout_name, replace=True)
    OmegaConf.register_new_resolver("recipe", recipe_value, replace=True)


def recipes_dir() -> Path:
    """The folder holding the root configs and the groups model/ sft/ rl/ reward/ eval/ cluster/ ..."""
    return Path(__file__).resolve().parent


def compose(config_name: str, overrides: list[str] | None = None, extra_dirs: list[str | Path] = ()):
    """Compose ``<recipes>/<config_name>.yaml`` with ``overrides``; returns an OmegaConf DictConfig.

    Unknown keys and groups fail here with Hydra's own message.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    overrides = list(overrides or [])
    if extra_dirs:
        searchpath = ",".join(f"file://{Path(d).resolve()}" for d in extra_dirs)
        overrides.append(f"hydra.searchpath=[{searchpath}]")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3", job_name=f"medsage_{config_name}"):
        return hydra_compose(config_name=config_name, overrides=overrides)
