"""`medsage rl`: recipes -> verl overrides, validated by composing verl 0.9.1's own trainer config."""

from __future__ import annotations

import yaml
import pytest

pytest.importorskip("verl")

from medsage.launch import rl as rl_launch  # noqa: E402


def _cfg(tmp_path, *extra):
    return rl_launch.compose_recipe(["model=tiny", f"model.path={tmp_path / 'model'}", "cluster=a100_4x",
                                     f"train_files={tmp_path / 'train.parquet'}", f"output_dir={tmp_path / 'run'}",
                                     *extra])


def _verl(tmp_path, *extra):
    cfg = _cfg(tmp_path, *extra)
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    overrides = rl_launch.verl_overrides(cfg, out)
    verl_cfg = rl_launch.compose_verl_config(overrides)
    registered = rl_launch.validate_verl_config(verl_cfg)
    return cfg, verl_cfg, registered


def test_rgrpo_composes_into_verls_own_config(tmp_path):
    _, v, registered = _verl(tmp_path)
    assert v.algorithm.adv_estimator == "medsage_self_check" and v.algorithm.self_check_alpha == 0.2  # α: the estimator's
    assert registered["adv_estimator"] == "medsage.plugins.self_check.advantage.compute_self_check_advantage"
    assert v.trainer.use_v1 is False
    ar = v.actor_rollout_ref
    assert ar.rollout.agent.default_agent_loop == "medsage_self_check"
    assert (ar.rollout.n, ar.actor.optim.lr, v.trainer.total_epochs) == (6, 1e-5, 8)
    # τ1 1024 + request 128 + check/τ2 1024 (the retry's own budget, paper: 1024 each)
    assert (v.data.max_prompt_length, v.data.max_response_length) == (1024, 2176)
    assert ar.rollout.response_length == 2176  # verl's interpolation from data.* still resolves
    assert ar.actor.freeze_vision_tower is True and ar.actor.ppo_micro_batch_size_per_gpu == 2
    # 4 GPUs x 2 per device x 8 accumulation = 64 sequences -> 12 prompts x 6 rollouts = 72
    assert ar.actor.ppo_mini_batch_size == 12 and v.data.train_batch_size == 12
    assert v.reward.custom_reward_function.path.endswith("plugins/engines/verl_reward.py")
    assert v.reward.custom_reward_function.reward_kwargs.reward == "composite"
    assert v.reward.custom_reward_function.reward_kwargs.reward_params.weights.accuracy == 1.0
    loop_cfg = yaml.safe_load(open(ar.rollout.agent.agent_loop_config_path))
    assert loop_cfg == [{"name": "medsage_self_check", "_target_": "medsage.plugins.self_check.loop.SelfCheckAgentLoop",
                         "retry": True, "tau1_max_tokens": 1024, "tau2_max_tokens": 1024,
                         "accuracy": {"open_match": "semantic"}}]
    assert ar.rollout.name == "vllm" and v.trainer.rollout_data_dir == str(tmp_path / "run" / "rollouts")
    # verl's own loader finds the manager that tells the loop a validation pass (no answer-key retry there)
    from verl.utils.import_utils import load_class_from_fqn

    from medsage.plugins.self_check.manager import SelfCheckAgentLoopManager

    assert load_class_from_fqn(ar.rollout.agent.agent_loop_manager_class) is SelfCheckAgentLoopManager
    assert list(ar.actor.checkpoint.save_contents) == ["model", "optimizer", "extra", "hf_model"]
    # no flash_attn in this (RL) environment: sdpa for the actor and reference model, so verl's own default
    # (flash_attention_2, workers/config/model.py) is never reached, and no flash-attn remove-padding
    assert ar.model.override_config.attn_implementation == "sdpa" and ar.model.use_remove_padding is False


def test_flash_attention_where_the_rl_environment_has_flash_attn(tmp_path):
    # A bare virtualenv whose `flash_attn` is a stand-in for detection only (tests/helpers/standin_env.py).
    from standin_env import bare_venv

    env = bare_venv(tmp_path / "rl_env", "flash_attn")
    _, v, _ = _verl(tmp_path, f"cluster.envs.rl={env}")
    assert v.actor_rollout_ref.model.override_config.attn_implementation == "flash_attention_2"
    assert v.actor_rollout_ref.model.use_remove_padding is True
    _, v, _ = _verl(tmp_path, f"cluster.envs.rl={env}", "model.attn_implementation=eager")  # explicit: honoured
    assert v.actor_rollout_ref.model.override_config.attn_implementation == "eager"
    assert v.actor_rollout_ref.model.use_remove_padding is False


@pytest.mark.skipif(__import__("shutil").which("nvidia-smi") is not None, reason="a GPU machine would launch verl")
def test_a_gpu_recipe_without_a_gpu_launches_nothing_and_fails_with_the_fix(tmp_path, tiny_model_dir, capsys):
    # The real preflight of this interpreter (the RL environment here): torch sees no CUDA device, no vLLM.
    from rl_run import write_rl_parquet

    for var in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        assert var not in __import__("os").environ
    rc = rl_launch.main(["model=tiny", f"model.path={tiny_model_dir}", "cluster=a100_4x",
                         f"train_files={write_rl_parquet(tmp_path, repeat=2)}", f"output_dir={tmp_path / 'run'}"])
    captured = capsys.readouterr()
    assert rc == 1, captured.out + captured.err
    assert "medsage rl: not launched: the RL environment cannot run this recipe" in captured.err
    assert "problem: rl: no CUDA device is visible to torch" in captured.err
    assert "problem: rl: vllm is not installed, and verl's rollout runs on vLLM" in captured.err
    assert "fix:     medsage env setup --stage rl --prefix envs, then set cluster.envs.rl=envs/rl" in captured.err
    assert "launching" not in captured.out and not (tmp_path / "run" / "verl.log").exists()


def test_final_model_points_at_the_latest_hf_checkpoint(tmp_path):
    # verl's checkpoint layout (utils/checkpoint): the marker file and global_step_<N>/actor/huggingface.
    out = tmp_path / "run"
    assert rl_launch.link_final_model(out) is None
    ckpt = out / "checkpoints"
    for step in (100, 200, 300):
        (ckpt / f"global_step_{step}" / "actor" / "huggingface").mkdir(parents=True)
        (ckpt / f"global_step_{step}" / "actor" / "huggingface" / "config.json").write_text(str(step))
        if step != 300:  # step 300 saved without hf_model: verl still writes config.json there, but no weights
            (ckpt / f"global_step_{step}" / "actor" / "huggingface" / "model.safetensors").write_bytes(b"")
    (ckpt / "latest_checkpointed_iteration.txt").write_text("100")
    assert (rl_launch.link_final_model(out) / "config.json").read_text() == "100"
    (ckpt / "latest_checkpointed_iteration.txt").write_text("300")
    assert rl_launch.link_final_model(out) is None
    assert not (out / "final_model").is_symlink()  # not left naming step 100 as the final model
    (ckpt / "latest_checkpointed_iteration.txt").write_text("200\n")
    assert (rl_launch.link_final_model(out) / "config.json").read_text() == "200"
    assert (out / "final_model").is_symlink() and not (out / ".final_model.tmp").exists()


def test_grpo_and_alpha_override(tmp_path):
    _, v, _ = _verl(tmp_path, "rl=grpo")
    assert v.algorithm.adv_estimator == "grpo"
    # medsage's loop without the retry: it bans vision tokens, which verl's single-turn loop does not;
    # the legacy trainer, as verl's default v1 path needs transfer_queue (not installed)
    assert v.actor_rollout_ref.rollout.agent.default_agent_loop == "medsage_self_check"
    assert yaml.safe_load(open(v.actor_rollout_ref.rollout.agent.agent_loop_config_path))[0]["retry"] is False
    assert v.trainer.use_v1 is False and v.data.max_response_length == 1024
    assert v.actor_rollout_ref.rollout.n == 6 and v.trainer.total_epochs == 8
    assert "self_check_alpha" not in v.algorithm  # no estimator of medsage's, no α
    _, v, _ = _verl(tmp_path, "rl.alpha=0.15", "rl.request='Check again, please.'")
    loop_cfg = yaml.safe_load(open(tmp_path / "run" / "agent_loop.yaml"))
    assert v.algorithm.self_check_alpha == 0.15 and "alpha" not in loop_cfg[0]
    assert loop_cfg[0]["request"] == "Check again, please."


def test_paper_exact_response_budget(tmp_path):
    """B.1: max sequence 2,048, max generation 1,024. per_turn gives a retried response up to 2,176 tokens;
    whole keeps τ1, the request and the retry inside one 1,024-token response."""
    _, per_turn, _ = _verl(tmp_path)
    assert per_turn.data.max_prompt_length + per_turn.data.max_response_length == 3200
    _, whole, _ = _verl(tmp_path, "rl.response_budget=whole")
    assert (whole.data.max_prompt_length, whole.data.max_response_length) == (1024, 1024)
    assert whole.actor_rollout_ref.rollout.response_length == 1024
    loop = yaml.safe_load(open(whole.actor_rollout_ref.rollout.agent.agent_loop_config_path))[0]
    assert (loop["tau1_max_tokens"], loop["tau2_max_tokens"]) == (1024, 1024)  # the loop caps the retry by what is left
    with pytest.raises(rl_launch.ConfigError, match="response_budget"):
        _cfg(tmp_path, "rl.response_budget=both")


def test_alpha_has_one_default():
    """α is written once, in rl/rgrpo.yaml: grpo inherits it, the pipeline reads it, the loop has none."""
    import inspect
    import re

    from medsage.plugins.self_check.loop import SelfCheckAgentLoop
    from medsage.recipes import compose, recipes_dir

    written = sorted(str(p.relative_to(recipes_dir())) for p in recipes_dir().rglob("*.yaml")
                     if re.search(r"^\s*alpha:\s*[-+]?[\d.]+\s*(#|$)", p.read_text(), re.M))  # a sweep is no default
    assert written == ["rl/rgrpo.yaml"]
    assert compose("pipeline", ["+experiment=demo"]).alpha == compose("rl").rl.alpha
    assert "alpha" not in inspect.signature(SelfCheckAgentLoop.__init__).parameters


def test_the_agent_loop_file_names_the_rewards_accuracy_rule(tmp_path):
    """The retry's trigger and r_sc judge with the reward recipe's accuracy rule, written in the loop's file."""
    def loop_accuracy(*extra):
        cfg = _cfg(tmp_path, *extra)
        rl_launch.verl_overrides(cfg, tmp_path / "run")
        return yaml.safe_load(open(tmp_path / "run" / "agent_loop.yaml"))[0]["accuracy"]

    assert loop_accuracy("reward.params.components.accuracy.open_match=exact") == {"open_match": "exact"}
    judge = {"base_url": "http://127.0.0.1:8000/v1", "model": "judge"}
    got = loop_accuracy("reward=accuracy", "reward.params.open_match=llm", "+reward.params.judge.base_url=" + judge["base_url"],
                        "+reward.params.judge.model=judge", "reward.params.threshold=0.9")
    assert got["open_match"] == "llm" and got["judge"] == judge and got["threshold"] == 0.9
    assert loop_accuracy("reward=format") == {}  # no accuracy term in the reward: the default rule


def test_verl_rejects_a_bad_key_and_inconsistent_batches(tmp_path):
    with pytest.raises(rl_launch.RLConfigError, match="not_a_key"):
        _verl(tmp_path, "extra_overrides=['actor_rollout_ref.actor.not_a_key=1']")
    with pytest.raises(rl_launch.RLConfigError, match="use_v1"):
        _verl(tmp_path, "extra_overrides=['trainer.use_v1=true']")
    with pytest.raises(rl_launch.RLConfigError, match="multiple of the update batch"):
        _verl(tmp_path, "rl.rollout_batch_prompts=13")


def test_main_prints_the_cpu_route_on_a_dry_run(tmp_path, capsys):
    rc = rl_launch.main(["model=tiny", f"model.path={tmp_path}", "cluster=local_cpu", "dry_run=true",
                         f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run'}"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "not launched: dry_run=true" in out
    for cpu in ("actor_rollout_ref.rollout.name=hf_cpu", "trainer.device=cpu", "actor_rollout_ref.actor.strategy=fsdp2",
                "+ray_kwargs.ray_init.num_gpus=1", "VERL_PLATFORM:medsage_cpu",
                "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
                "actor_rollout_ref.model.use_remove_padding=false"):
        assert cpu in out, cpu
    assert "-m verl.trainer.main_ppo" in out and "algorithm.adv_estimator=medsage_self_check" in out
    assert (tmp_path / "run" / "verl_config.yaml").exists() and (tmp_path / "run" / "verl_overrides.txt").exists()


def test_main_reports_a_missing_required_field(tmp_path, capsys):
    rc = rl_launch.main(["model=tiny", f"model.path={tmp_path}", "cluster=local_cpu", f"output_dir={tmp_path / 'r'}"])
    assert rc == 2 and "train_files" in capsys.readouterr().err


def test_easyr1_plain_grpo_and_retry_refused(tmp_path, capsys):
    args = ["backend=easyr1", "rl=grpo", "model=tiny", f"model.path={tmp_path}", "cluster=a100_4x",
            f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run'}"]
    # medsage writes EasyR1's config but does not run EasyR1: success only when that is all that was asked
    assert rl_launch.main(args) == 1
    assert "not launched" in capsys.readouterr().err
    rc = rl_launch.main([*args, "dry_run=true"])
    assert rc == 0
    conf = yaml.safe_load(open(tmp_path / "run" / "easyr1_config.yaml"))
    assert conf["algorithm"]["adv_estimator"] == "grpo"
    assert conf["worker"]["reward"]["reward_function"].endswith("plugins/engines/easyr1_reward.py:compute_score")
    assert conf["worker"]["rollout"]["n"] == 6 and conf["worker"]["actor"]["optim"]["lr"] == 1e-5
    assert conf["worker"]["actor"]["model"]["freeze_vision_tower"] is True
    rc = rl_launch.main(["backend=easyr1", "model=tiny", f"model.path={tmp_path}", "cluster=a100_4x",
                         f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run2'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs verl" in err


def test_hydra_values_round_trip():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    value = {"a": "x y", "b": [1, 2.5, None, True], "c": "1e-5", "d": "it's", "e": "plain_name", "f": "/a/b.py"}
    parsed = OverridesParser.create().parse_override(f"k={rl_launch._hydra_value(value)}").value()
    assert parsed == value


def test_verl_starts_its_ray_on_loopback_or_joins_the_pipelines(tmp_path, monkeypatch):
    from medsage.plugins.engines import verl as engine

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = rl_launch.compose_recipe(["model=tiny", f"model.path={tmp_path}", "cluster=local_cpu",
                                    f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run'}"])
    own = engine.ray_overrides(cfg, 1)
    assert own["+ray_kwargs.ray_init._node_ip_address"] == "127.0.0.1" and own["+ray_kwargs.ray_init.num_gpus"] == 1
    assert engine.driver_env(cfg)["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    env_vars = own["+ray_kwargs.ray_init.runtime_env.env_vars"]
    assert env_vars["VERL_USE_EXTERNAL_MODULES"] == "medsage.plugins.engines.verl_cpu"
    assert env_vars["MEDSAGE_FREEZE_VISION_TOWER"] == "1"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # what Ray sets for a job's entrypoint,
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # with this
    joined = engine.ray_overrides(cfg, 1)
    assert joined["+ray_kwargs.ray_init.address"] == "auto"  # the job's own cluster
    assert "+ray_kwargs.ray_init.num_gpus" not in joined and "+ray_kwargs.ray_init._node_ip_address" not in joined
    assert engine.driver_env(cfg)["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    assert engine.driver_command(cfg, ["verl"]) == ["verl"]  # a job already: the driver runs where it is


@pytest.mark.parametrize("address", ["http://head:8265", "ray://head:10001", "head:6379"])
def test_standalone_rl_with_a_cluster_address_submits_verls_driver_as_a_job(address, tmp_path, monkeypatch):
    """ray.init refuses a dashboard address ("Invalid Ray address"); the Jobs API takes every form, and inside the job
    verl's ray.init joins with address=auto. The GPUs are the cluster's, so no local CUDA check stops the launch."""
    from medsage.plugins.engines import verl as engine

    for var in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(var, raising=False)
    cfg = _cfg(tmp_path, f"cluster.ray_address={address}", "cluster.nnodes=2", "cluster.gpus_per_node=8")
    out = tmp_path / "run"
    out.mkdir()
    overrides = dict(o.split("=", 1) for o in rl_launch.verl_overrides(cfg, out))
    assert overrides["+ray_kwargs.ray_init.address"] == "auto"
    assert (overrides["trainer.nnodes"], overrides["trainer.n_gpus_per_node"]) == ("2", "8")
    command = engine.driver_command(cfg, ["python", "-m", "verl.trainer.main_ppo", "x=1"])
    assert command[1:5] == ["-m", "medsage.launch.pipeline.submit", "--address", address]
    assert command[command.index("--") + 1:] == ["python", "-m", "verl.trainer.main_ppo", "x=1"]
    assert "RAY_OVERRIDE_JOB_RUNTIME_ENV=1" in command and "MEDSAGE_FREEZE_VISION_TOWER=1" in command
    assert rl_launch.needs_local_preflight(cfg) is False
    assert rl_launch.needs_local_preflight(_cfg(tmp_path)) is True  # the same gpu recipe run here: checked here


def test_rl_over_several_nodes_needs_a_cluster(tmp_path, monkeypatch, capsys):
    for var in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR"):
        monkeypatch.delenv(var, raising=False)
    rc = rl_launch.main(["model=tiny", f"model.path={tmp_path}", "cluster=a100_8x_2nodes", "dry_run=true",
                         f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run'}"])
    assert rc == 2 and "cluster.nnodes=2: verl spans several nodes of a running Ray cluster" in capsys.readouterr().err


def test_verls_hydra_run_folder_is_inside_the_output_dir(tmp_path, monkeypatch, capsys):
    """main_ppo is a Hydra app: without hydra.run.dir it writes ./outputs/<date>/ wherever `medsage rl` runs."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    rc = rl_launch.main(["model=tiny", f"model.path={tmp_path}", "cluster=local_cpu", "dry_run=true",
                         f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'run'}"])
    assert rc == 0
    overrides = (tmp_path / "run" / "verl_overrides.txt").read_text().splitlines()
    assert f"hydra.run.dir={tmp_path / 'run' / 'hydra'}" in overrides
    assert f"hydra.run.dir={tmp_path / 'run' / 'hydra'}" in capsys.readouterr().out  # in the printed command
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize("override,message", [
    ("rl.micro_batch_per_device=0", "rl.micro_batch_per_device=0: must be 1 or more"),
    ("rl.rollout_n=0", "rl.rollout_n=0: must be 2 or more (the GRPO group)"),
    ("rl.rollout_n=1", "rl.rollout_n=1: must be 2 or more (the GRPO group)"),
    ("rl.grad_accum=-2", "rl.grad_accum=-2: must be 1 or more"),
    ("rl.alpha=-0.1", "rl.alpha=-0.1: must be 0 or more"),
    ("rl.rollout_batch_prompts=0", "rl.rollout_batch_prompts=0: must be 1 or more, or null"),
    ("rl.lr=0", "rl.lr=0.0: must be above 0"),
    ("rl.test_freq=0", "rl.test_freq=0: must be -1 (never) or 1 or more"),
])
def test_values_verl_would_fail_on_are_refused_before_launch(tmp_path, capsys, override, message):
    # They were a ZeroDivisionError traceback, "verl config validated", or a verl failure ~110 s in.
    rc = rl_launch.main(["model=tiny", f"model.path={tmp_path}", "cluster=local_cpu", "dry_run=true",
                         f"train_files={tmp_path / 't.parquet'}", f"output_dir={tmp_path / 'r'}", override])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
