"""The plugin registry: entry points and in-process registration, errors that list what is installed."""

from __future__ import annotations

import sys
import textwrap
from types import SimpleNamespace

import pytest

from medsage.registry import Registry, RegistryError


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed third-party distribution (a real dist-info on sys.path) declaring medsage.testkind entries."""

    def make(name: str, entries: dict[str, str], module_src: str = "", group: str = "medsage.testkind") -> None:
        pkg = tmp_path / name
        pkg.mkdir()
        (pkg / f"{name}_plugin.py").write_text(textwrap.dedent(module_src))
        info = pkg / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
        (info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
        monkeypatch.syspath_prepend(str(pkg))

    yield make
    for mod in [m for m in sys.modules if m.endswith("_plugin")]:
        sys.modules.pop(mod)


def test_entry_point_plugin_loads_lazily(plugin_dist):
    plugin_dist("labone", {"brightness": "labone_plugin:score"}, "def score(x):\n    return x * 2\n")
    reg = Registry("testkind")
    assert "brightness" in reg.names()
    assert "labone_plugin" not in sys.modules  # listing does not import
    assert reg.get("brightness")(21) == 42


def test_unknown_name_lists_installed_and_suggests(plugin_dist):
    plugin_dist("labtwo", {"accuracy": "labtwo_plugin:a", "format": "labtwo_plugin:f"})
    reg = Registry("testkind")
    reg.register("local_one")(object())
    with pytest.raises(RegistryError) as err:
        reg.get("acuracy")
    msg = str(err.value)
    assert "unknown testkind 'acuracy'" in msg
    assert "Did you mean 'accuracy'?" in msg
    assert "Installed: accuracy, format, local_one" in msg
    assert "medsage.testkind" in msg


def test_empty_registry_says_none_installed():
    with pytest.raises(RegistryError, match="Installed: none"):
        Registry("nothing_here").get("x")


def test_conflicting_duplicate_is_an_error(plugin_dist):
    plugin_dist("labthree", {"dup": "labthree_plugin:a"})
    plugin_dist("labfour", {"dup": "labfour_plugin:b"})
    with pytest.raises(RegistryError, match="declared twice"):
        Registry("testkind").get("dup")


def test_decorator_registration_and_conflict():
    reg = Registry("testkind_local")

    @reg.register("mine")
    def mine():
        return 1

    assert reg.get("mine") is mine
    reg.register("mine")(mine)  # the same object again is fine
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("mine")(lambda: 2)


def test_broken_plugin_import_names_the_entry_point(plugin_dist):
    plugin_dist("labfive", {"broken": "labfive_plugin:missing_attr"}, "x = 1\n")
    with pytest.raises(RegistryError, match="'broken' is installed as 'labfive_plugin:missing_attr' but failed"):
        Registry("testkind").get("broken")


def test_eval_backends_and_scorers_are_registered_like_the_rest():
    from medsage.eval.backends.base import make_backend
    from medsage.plugins.rewards.consistency import RuleScorer, load_scorer
    from medsage.registry import EVAL_BACKENDS, SCORERS

    assert {"hf", "vllm", "openai"} <= set(EVAL_BACKENDS.names())
    assert {"rule", "learned"} <= set(SCORERS.names())
    assert isinstance(load_scorer("rule"), RuleScorer)
    with pytest.raises(RegistryError, match="Did you mean 'rule'"):
        load_scorer("rules")
    with pytest.raises(RegistryError, match="unknown eval_backends 'hff'.*Did you mean 'hf'"):
        make_backend(SimpleNamespace(name="hff"), "unused", None)


def test_a_plugin_eval_backend_is_built_from_its_recipe_node(plugin_dist):
    from omegaconf import OmegaConf

    from medsage.eval.backends.base import GenerationConfig, make_backend

    plugin_dist("labsix", {"echo": "labsix_plugin:Echo"}, "class Echo:\n    name = 'echo'\n"
                "    @classmethod\n    def from_recipe(cls, cfg, model_path, generation):\n"
                "        e = cls(); e.args = (cfg.greeting, model_path, generation); return e\n",
                group="medsage.eval_backends")
    backend = make_backend(OmegaConf.create({"name": "echo", "greeting": "hi"}), "/m", GenerationConfig())
    assert backend.args == ("hi", "/m", GenerationConfig())
