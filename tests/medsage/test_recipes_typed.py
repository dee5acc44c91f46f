"""Every recipe in recipes/ fits its stage's typed config (medsage.config), and a bad one fails with the key's path.

- each option of the groups the typed stages read (sft/, rl/, reward/, model/, cluster/), each data recipe and the
  synthesis recipe compose and are typed by their stage's own entry (``medsage sft``'s, ``medsage rl``'s, ``medsage data synth run``'s);
- each experiment, every option of its sweeps included, plans stage commands whose overrides compose and are typed
  by the stage they go to (data, synthesis, SFT, RL, eval), so a misspelt key in an experiment fails here;
- an unknown key, a wrong type and a ``???`` left unset each fail naming the key, before any engine starts.
Values a recipe leaves ``???`` (a model folder, a data root) are filled with a placeholder path.
"""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from medsage.config import ConfigError
from medsage.recipes import compose, recipes_dir


def _unset(node, path: str = "") -> list[str]:
    """The keys left ``???`` in an unresolved container (OmegaConf.missing_keys would resolve interpolations)."""
    items = list(node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else [])
    return [f"{path}{k}" for k, v in items if v == "???"] + \
        [key for k, v in items if isinstance(v, (dict, list)) for key in _unset(v, f"{path}{k}.")]


def _filled(root: str, overrides: list[str]) -> list[str]:
    """``overrides`` plus a placeholder for every value the recipe leaves ``???`` (not those they set to ``???``)."""
    asked = {o.partition("=")[0] for o in overrides if o.endswith("=???")}
    missing = _unset(OmegaConf.to_container(compose(root, overrides), resolve=False))
    return [*overrides, *(f"{key}=/placeholder" for key in missing if key not in asked)]


def _sft(overrides: list[str]):
    from medsage.launch.sft import _compose

    return _compose(_filled("sft", overrides), ())


def _rl(overrides: list[str]):
    from medsage.launch.rl import _reward_overrides, compose_recipe

    return compose_recipe(_filled("rl", _reward_overrides(overrides)))


def _synth(overrides: list[str], config: str = "synthesis/default"):
    from medsage.data_pipeline.synthesis.config import synthesis_recipe

    return synthesis_recipe(compose(config, _filled(config, overrides)), config)


def _data(overrides: list[str], config: str):
    from medsage.data_pipeline.run import RunConfig

    cfg = compose(f"data/{config}", _filled(f"data/{config}", overrides))
    return RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True), config)


def _eval(overrides: list[str]):
    from medsage.eval.run import EvalConfig

    return EvalConfig.from_recipe(compose("eval", _filled("eval", overrides)))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (recipes_dir() / group).glob("*.yaml"))


GROUP_FILES = [("sft", f"sft={o}") for o in _options("sft")] + [("rl", f"rl={o}") for o in _options("rl")] \
    + [("rl", f"reward={o}") for o in _options("reward")] \
    + [(root, f"{group}={o}") for group in ("model", "cluster") for o in _options(group) for root in ("sft", "rl")]


@pytest.mark.parametrize("root, choice", GROUP_FILES, ids=lambda v: v)
def test_every_group_option_is_typed_by_its_stage(root, choice):
    group, _, option = choice.partition("=")
    if root == "rl":
        node = _rl([choice])[group]
        assert OmegaConf.get_type(node).__name__ in {"RLSection", "RewardConfig", "ModelConfig", "ClusterConfig"}
    else:
        node = _sft([choice])[1][group]  # (the DictConfig, the resolved dict)
    assert node["name"] == option or group == "reward"  # reward.name is the entry point, not the file's name


@pytest.mark.parametrize("config", _options("data"))
def test_every_data_recipe_is_typed_with_its_sources_options(config):
    cfg = _data([], config)
    assert cfg.sources and all(s.option_problem() is None for s in cfg.sources)


def test_the_synthesis_recipe_is_typed_with_the_retry_share():
    cfg = _synth([])
    assert cfg["rpa"]["retry_share"] == 0.0 and cfg["client"]["base_url"] is None and cfg["verify"]["k"] == 2
    assert set(cfg["prompt"]["instructions"]) == {"closed", "open", "choice"}
    assert _synth(["rpa.retry_share=0.25"])["rpa"]["retry_share"] == 0.25


def _sweeps(experiment: str) -> list[list[str]]:
    """The experiment alone and, for a Hydra multirun, each option of each swept key (the others at their first)."""
    params = OmegaConf.select(OmegaConf.load(recipes_dir() / "experiment" / f"{experiment}.yaml"),
                              "hydra.sweeper.params") or {}
    values = {key: str(v).split(",") for key, v in params.items()}
    runs = [[f"{k}={vs[0]}" for k, vs in values.items()]]
    for key, options in values.items():
        runs += [[f"{key}={o}" if k == key else f"{k}={vs[0]}" for k, vs in values.items()] for o in options[1:]]
    return runs


EXPERIMENTS = [(e, sweep) for e in _options("experiment") for sweep in _sweeps(e)]


def _overrides(argv: list[str]) -> list[str]:
    """A stage command's Hydra overrides: what follows its verbs and ``--flag value`` pairs."""
    rest = list(itertools.dropwhile(lambda a: "=" not in a and not a.startswith("--"), argv))
    out, skip = [], False
    for a in rest:
        if skip or a.startswith("--"):
            skip = a.startswith("--")
            continue
        out.append(a)
    return out


@pytest.mark.parametrize("experiment, sweep", EXPERIMENTS, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_experiments_stage_commands_are_typed_by_their_stage(experiment, sweep, tmp_path):
    from medsage.launch.pipeline.dag import plan_stages

    cfg = compose("pipeline", _filled("pipeline", [f"+experiment={experiment}", *sweep, f"store={tmp_path}"]))
    stages = plan_stages(OmegaConf.to_container(cfg.stages, resolve=True), tmp_path)
    checked = set()
    for stage in stages:
        argv = stage.command()
        overrides = _overrides(argv)
        if argv[0] == "sft":
            _sft(overrides)
        elif argv[0] == "rl":
            _rl(overrides)
        elif argv[:3] == ["data", "synth", "run"]:
            _synth(overrides, argv[argv.index("--config") + 1] if "--config" in argv else "synthesis/default")
        elif argv[:2] == ["data", "run"]:
            _data(overrides, argv[argv.index("--config") + 1] if "--config" in argv else "sage_pool")
        elif argv[:2] == ["eval", "run"]:
            _eval(overrides)
        else:
            continue
        checked.add(argv[0] if argv[0] != "data" else " ".join(argv[:2]))
    assert {"sft", "data run", "data synth", "eval"} <= checked, checked


@pytest.mark.parametrize("stage, overrides, message", [
    ("sft", ["cluster.gpus_per_node=many"], r"recipes/sft\.yaml: cluster\.gpus_per_node: Value 'many'"),
    ("sft", ["+model.hidden=8"], r"model\.hidden: Key 'hidden' not in 'ModelConfig'"),
    ("sft", ["sft.deepspeed=[1,2]"], r"sft\.deepspeed: "),
    ("sft", ["cluster.accelerator=tpu"], r"cluster\.accelerator must be cpu or gpu, got 'tpu'"),
    ("sft", ["sft.learning_rate=???"], r"sft\.learning_rate is required \(\?\?\?\): set sft\.learning_rate="),
    ("rl", ["rl.rollout_n=six"], r"recipes/rl\.yaml: rl\.rollout_n: Value 'six'"),
    ("rl", ["+rl.alhpa=0.1"], r"rl\.alhpa: Key 'alhpa' not in 'RLSection'"),
    ("rl", ["loggers=console"], r"loggers: "),
    ("rl", ["backend=trl"], r"backend='trl': expected verl or easyr1"),
    ("rl", ["rl.alpha=???"], r"rl\.alpha is required \(\?\?\?\): set rl\.alpha="),
    ("synth", ["rpa.max_per_image=lots"], r"synthesis/default: rpa\.max_per_image: Value 'lots'"),
    ("synth", ["+verify.kk=3"], r"verify\.kk: Key 'kk' not in 'VerifyConfig'"),
    ("synth", ["rpa.retry_share=2"], r"rpa\.retry_share must be in \[0, 1\), got 2"),
])
def test_a_bad_value_fails_naming_the_key(stage, overrides, message):
    from medsage.launch.sft import SftError

    run = {"sft": _sft, "rl": _rl, "synth": _synth}[stage]
    with pytest.raises((ConfigError, SftError), match=message):
        run(overrides)


def test_the_rl_recipe_stays_typed_after_composition(tmp_path):
    cfg = _rl(["model=tiny"])
    with pytest.raises(Exception, match="rollout_n"):
        cfg.rl.rollout_n = "six"  # a typed DictConfig: a later assignment is checked too
    assert OmegaConf.to_container(cfg.reward.params, resolve=True)["normalize"] is True


def test_medsage_rl_and_sft_refuse_before_any_engine(tmp_path, capsys, monkeypatch):
    """The CLI's own message, before LLaMA-Factory's schema is read or verl's config composed; nothing written."""
    from medsage.launch import rl, sft

    monkeypatch.chdir(tmp_path)
    assert rl.main(["model=tiny", "model.path=/m", "train_files=/t", "reward=plugin"]) == 2
    assert "recipes/rl.yaml: reward.name is required (???): set reward.name=..." in capsys.readouterr().err
    assert sft.main(["--dry-run", "data.dataset_dir=/d", "+cluster.gpu=1"]) == 2
    assert "recipes/sft.yaml: cluster.gpu: Key 'gpu' not in 'ClusterConfig'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
