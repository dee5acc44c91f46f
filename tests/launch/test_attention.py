"""``model.attn_implementation: auto``: flash_attention_2 where flash_attn imports in the stage's environment,
sdpa elsewhere; carried into LLaMA-Factory's args and the hf eval backend (verl's overrides: tests/plugins/
test_rl_launch.py).

"Present" is shown with a bare virtualenv holding a stand-in ``flash_attn`` module (tests/helpers/standin_env.py):
a stand-in for detection only, as real flash-attn is a CUDA source build. "Absent" is this dev environment.
"""

from __future__ import annotations

import sys

import pytest
from standin_env import bare_venv

from medsage.launch import preflight


@pytest.fixture(scope="module")
def flash_env(tmp_path_factory):
    return bare_venv(tmp_path_factory.mktemp("envs") / "with_flash_attn", "flash_attn")


def test_resolution_both_ways():
    assert preflight.resolve_attention("auto", flash_attn=True) == "flash_attention_2"
    assert preflight.resolve_attention("auto", flash_attn=False) == "sdpa"
    for explicit in ("sdpa", "eager", "flash_attention_2"):  # honoured as written
        assert preflight.resolve_attention(explicit, flash_attn=False) == explicit
        assert preflight.resolve_attention(explicit, flash_attn=True) == explicit


def test_the_stage_environment_decides(flash_env):
    assert preflight.stage_attention("auto", None, on_gpu=True) == "sdpa"  # this environment: no flash_attn
    assert preflight.stage_attention("auto", str(flash_env), on_gpu=True) == "flash_attention_2"
    assert preflight.stage_attention("auto", str(flash_env), on_gpu=False) == "sdpa"  # no CPU kernels
    with pytest.raises(ValueError, match="flash_attention_2 needs CUDA"):
        preflight.stage_attention("flash_attention_2", None, on_gpu=False)


def test_every_model_recipe_defaults_to_auto_and_a_bad_value_fails_by_key():
    from medsage.config import ConfigError
    from medsage.launch.sft import _compose
    from medsage.launch.sft_runs import SftError
    from medsage.recipes import compose, recipes_dir

    for recipe in sorted((recipes_dir() / "model").glob("*.yaml")):
        assert compose("env", [f"model={recipe.stem}"]).model.attn_implementation == "auto", recipe.name
    with pytest.raises((ConfigError, SftError), match=r"model.attn_implementation must be one of auto, "):
        _compose(["model.attn_implementation=flash", "data.dataset_dir=/d"], ())


def _lf_args(tmp_path, *overrides):
    from medsage.launch.sft import _compose
    from medsage.plugins.engines import llamafactory as lf

    _, recipe = _compose(["data.dataset_dir=/d", *overrides], ())
    return lf.lf_args(recipe, tmp_path / "run")


def test_llamafactory_args_carry_it(tmp_path, flash_env):
    # LLaMA-Factory's `flash_attn` (hparams/model_args.py): auto | disabled | sdpa | fa2 | fa3
    assert _lf_args(tmp_path, "cluster=a100_4x")["flash_attn"] == "sdpa"
    assert _lf_args(tmp_path, "cluster=a100_4x", f"cluster.envs.sft={flash_env}")["flash_attn"] == "fa2"
    assert _lf_args(tmp_path, "cluster=local_cpu", f"cluster.envs.sft={flash_env}")["flash_attn"] == "sdpa"
    assert _lf_args(tmp_path, "cluster=a100_4x", "model.attn_implementation=eager")["flash_attn"] == "disabled"
    forced = _lf_args(tmp_path, "cluster=a100_4x", "model.attn_implementation=flash_attention_2")
    assert forced["flash_attn"] == "fa2"  # honoured; the preflight refuses it where flash_attn does not import


def test_the_hf_eval_backend_loads_with_it(tiny_model_dir, flash_env, monkeypatch):
    from omegaconf import OmegaConf

    from medsage.eval.backends.base import GenerationConfig, make_backend
    from medsage.eval.backends.hf import HFBackend
    from medsage.eval.run import EvalConfig
    from medsage.recipes import compose

    base = ["model=tiny", f"model.path={tiny_model_dir}", "eval.data_root=/d", "eval/benchmarks=records"]
    ev, _ = EvalConfig.from_recipe(compose("eval", base))
    assert ev.backend["attn_implementation"] == "auto"  # the model recipe's, through eval/backend/hf.yaml
    backend = make_backend(OmegaConf.create(ev.backend), str(tiny_model_dir), GenerationConfig(max_new_tokens=2))
    assert backend.attn_implementation == "sdpa" and backend.model.config._attn_implementation == "sdpa"
    ev, _ = EvalConfig.from_recipe(compose("eval", [*base, "model.attn_implementation=eager"]))
    backend = make_backend(OmegaConf.create(ev.backend), str(tiny_model_dir), GenerationConfig(max_new_tokens=2))
    assert backend.model.config._attn_implementation == "eager"
    # in-process detection: auto is flash_attention_2 on CUDA where flash_attn imports, sdpa on CPU regardless
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # None: `import flash_attn` fails; removed afterwards
    assert HFBackend.attention("auto", "cuda:0") == "sdpa"
    site = flash_env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    monkeypatch.syspath_prepend(str(site))
    del sys.modules["flash_attn"]  # now it imports: the stand-in
    assert HFBackend.attention("auto", "cuda:0") == "flash_attention_2"
    assert HFBackend.attention("auto", "cpu") == "sdpa"
