"""`medsage sft` without training: recipes, key validation against LLaMA-Factory, launch selection, data checks."""

from __future__ import annotations

import json
import sys

import pytest

from medsage.launch.sft import SftError, main, run_sft
from medsage.plugins.engines import llamafactory as lf

TRAIN_SCRIPT = __import__("pathlib").Path(lf.__file__).with_name("llamafactory_train.py")


def test_paper_recipe_composes_with_the_papers_settings(tmp_path, sft_dataset, sft_schema_cache, capsys):
    data_dir, dataset = sft_dataset
    result = run_sft([f"data.dataset_dir={data_dir}", f"data.dataset={dataset}", f"output.dir={tmp_path / 'r'}"],
                     dry_run=True)
    a = result.args
    assert a["model_name_or_path"] == "Qwen/Qwen2.5-VL-7B-Instruct"  # a hub id is passed on as it is
    assert (a["finetuning_type"], a["freeze_vision_tower"], a["freeze_language_model"]) == ("full", True, False)
    assert (a["num_train_epochs"], a["learning_rate"], a["cutoff_len"]) == (4, 1e-5, 4096)
    assert (a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) == (4, 16)
    assert a["bf16"] is True and a["gradient_checkpointing"] is True and a["optim"] == "adamw_torch"
    assert a["deepspeed"].endswith("recipes/deepspeed/zero2.json")
    assert json.loads(open(a["deepspeed"]).read())["zero_optimization"]["stage"] == 2
    out = capsys.readouterr().out
    # The paper states 1024; 4 x 16 x 4 GPUs is 256, and that is what is printed.
    assert "4 per device x 16 accumulation x 4 GPUs x 1 node = 256" in out
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
    from medsage.recipes import recipes_dir

    assert "1024" in (recipes_dir() / "sft" / "lvkc_full.yaml").read_text()


def test_every_recipe_field_has_a_comment():
    from medsage.recipes import recipes_dir

    for path in [recipes_dir() / "sft.yaml", *sorted((recipes_dir() / "sft").glob("*.yaml"))]:
        lines = path.read_text().splitlines()
        assert lines[0].startswith("#") and "medsage sft" in "\n".join(lines[:4]), f"{path}: no command header"
        for n, line in enumerate(lines, 1):
            if line.strip() and not line.lstrip().startswith(("#", "-")) and ":" in line and not line.endswith(":"):
                assert "#" in line, f"{path}:{n}: field without a comment: {line!r}"


def test_misspelt_key_fails_with_the_closest_valid_name(tiny_sft_overrides, sft_schema_cache):
    with pytest.raises(SftError, match=r"unknown LLaMA-Factory argument 'lerning_rate'; did you mean 'learning_rate'"):
        run_sft(tiny_sft_overrides("+sft.lerning_rate=1e-5"), dry_run=True, quiet=True)
    with pytest.raises(SftError, match=r"'freeze_visual_tower'; did you mean 'freeze_vision_tower'"):
        run_sft(tiny_sft_overrides("+sft.extra.freeze_visual_tower=true"), dry_run=True, quiet=True)


def test_values_outside_llamafactory_choices_or_types_fail(tiny_sft_overrides, sft_schema_cache):
    with pytest.raises(SftError, match=r"finetuning_type='fulll' is not one of \['lora', 'oft', 'freeze', 'full'\]"):
        run_sft(tiny_sft_overrides("sft.finetuning_type=fulll"), dry_run=True, quiet=True)
    with pytest.raises(SftError, match=r"gradient_checkpointing='sometimes' should be bool"):
        run_sft(tiny_sft_overrides("sft.gradient_checkpointing=sometimes"), dry_run=True, quiet=True)


def test_schema_is_read_from_llamafactory_and_cached(sft_schema_cache):
    schema = lf.load_schema()
    fields = schema["fields"]
    # Fields from each of LLaMA-Factory's five train dataclasses (transformers' TrainingArguments included).
    assert fields["freeze_vision_tower"]["cls"] == "FinetuningArguments"
    assert fields["cutoff_len"]["cls"] == "DataArguments"
    assert fields["image_max_pixels"]["cls"] == "ModelArguments"
    assert fields["gradient_accumulation_steps"]["cls"] == "TrainingArguments"
    assert fields["max_new_tokens"]["cls"] == "GeneratingArguments"
    assert schema["versions"]["llamafactory"] == "0.9.5"
    cached = list(sft_schema_cache.glob("llamafactory_schema_*.json"))
    assert len(cached) == 1
    assert lf.load_schema() == json.loads(cached[0].read_text())


def test_cpu_launch_is_one_training_process_with_bf16_off(tiny_sft_overrides, sft_schema_cache):
    result = run_sft(tiny_sft_overrides("sft.bf16=true", "sft.deepspeed=zero2"), dry_run=True, quiet=True)
    launch = result.launch
    assert launch.mode == "cpu" and launch.cmd[0] == sys.executable
    assert launch.cmd[1].endswith("plugins/engines/llamafactory_train.py")
    assert launch.cmd[2:] == [str(result.run_dir / "llamafactory_sft.yaml")]
    assert launch.env["CUDA_VISIBLE_DEVICES"] == ""
    assert launch.env["MEDSAGE_RESUME_RECORD"] == str(result.run_dir / "medsage_resume_check.json")
    assert result.args["bf16"] is False and "deepspeed" not in result.args


@pytest.mark.parametrize("cluster,gpus", [("a100_1x", 1), ("a100_4x", 4)])
def test_gpu_launch_runs_the_training_script_under_torchrun(tiny_sft_overrides, sft_schema_cache, cluster, gpus,
                                                            capsys):
    result = run_sft([*tiny_sft_overrides(f"cluster={cluster}", "sft.bf16=true", "sft.deepspeed=zero3",
                                          "sft.gradient_accumulation_steps=8")], dry_run=True)
    launch = result.launch
    assert launch.mode == "torchrun" and launch.processes == gpus
    assert launch.cmd == [sys.executable, str(TRAIN_SCRIPT), "--torchrun", str(result.run_dir / "llamafactory_sft.yaml")]
    assert (launch.env["NPROC_PER_NODE"], launch.env["NNODES"]) == (str(gpus), "1")
    assert "CUDA_VISIBLE_DEVICES" not in launch.env
    assert result.args["bf16"] is True and result.args["deepspeed"].endswith("zero3.json")
    assert f"2 per device x 8 accumulation x {gpus} GPU" in capsys.readouterr().out


def test_multi_node_sft_is_one_torchrun_per_node_placed_by_ray(monkeypatch, tmp_path):
    """Several nodes need a Ray cluster; in one (a pipeline stage is a Ray job) Ray places LLaMA-Factory's own
    torchrun launch once per node; from outside, with an address of any form, that launch is submitted as a job."""
    cluster = {"name": "two_nodes", "accelerator": "gpu", "nnodes": 2, "gpus_per_node": 4, "envs": {},
               "ray_address": None}
    config = tmp_path / "x.yaml"
    for var in ("RAY_ADDRESS", "RAY_JOB_CONFIG_JSON_ENV_VAR", "MASTER_ADDR", "NODE_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(lf.LlamaFactoryArgError, match=r"has 2 nodes: .*Set cluster\.ray_address"):
        lf.plan_launch(cluster, config)

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a job's command, with RAY_ADDRESS
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    launch = lf.plan_launch(cluster, config)
    assert (launch.mode, launch.processes, launch.env) == ("ray", 8, {})
    cmd = launch.cmd
    assert cmd[1:3] == ["-m", "medsage.launch.pipeline.per_node"]
    assert (cmd[cmd.index("--nodes") + 1], cmd[cmd.index("--gpus-per-node") + 1]) == ("2", "4")
    env = dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd[:cmd.index("--")]) if a == "--env")
    assert (env["NPROC_PER_NODE"], env["NNODES"]) == ("4", "2")
    assert "NODE_RANK" not in env and "MASTER_ADDR" not in env  # per node, from Ray's placement (per_node.py)
    inner = cmd[cmd.index("--") + 1:]
    assert inner[1:] == [str(TRAIN_SCRIPT), "--torchrun", str(config)]  # torchrun from the node's own variables
    one_node = lf.plan_launch({**cluster, "nnodes": 1}, config)  # in a job, one GPU node too: Ray finds its GPUs
    assert one_node.mode == "ray" and one_node.cmd[one_node.cmd.index("--nodes") + 1] == "1"
    cpu = lf.plan_launch({**cluster, "nnodes": 1, "accelerator": "cpu", "gpus_per_node": 0}, config)
    assert cpu.mode == "cpu" and cpu.cmd[1:] == [str(TRAIN_SCRIPT), str(config)]  # the demo's: trains where its job is

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    monkeypatch.delenv("RAY_ADDRESS")
    for address in ("http://head:8265", "ray://head:10001"):
        launch = lf.plan_launch({**cluster, "ray_address": address}, config)
        assert launch.cmd[1:5] == ["-m", "medsage.launch.pipeline.submit", "--address", address] and launch.env == {}
        inner = launch.cmd[launch.cmd.index("--") + 1:]
        assert inner[1:3] == ["-m", "medsage.launch.pipeline.per_node"]
        assert inner[inner.index("--") + 1:][1:] == [str(TRAIN_SCRIPT), "--torchrun", str(config)]

    assert lf.effective_batch({"per_device_train_batch_size": 4, "gradient_accumulation_steps": 16}, cluster)[0] == 512
    cpu_nodes = {**cluster, "accelerator": "cpu", "gpus_per_node": 0}
    assert lf.effective_batch({"per_device_train_batch_size": 2}, cpu_nodes) == (
        4, "2 per step x 1 accumulation x 2 CPU processes = 4")


def test_the_torchrun_launch_reads_its_node_from_the_environment():
    from medsage.plugins.engines.llamafactory_train import torchrun_command

    one = torchrun_command(["x.yaml"], {"NPROC_PER_NODE": "8", "NNODES": "1"})
    assert one[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "8", str(TRAIN_SCRIPT),
                       "x.yaml"]
    two = torchrun_command(["x.yaml"], {"NPROC_PER_NODE": "8", "NNODES": "2", "NODE_RANK": "1",
                                        "MASTER_ADDR": "10.0.0.1"})
    assert two[3:11] == ["--nnodes", "2", "--node_rank", "1", "--master_addr", "10.0.0.1", "--master_port", "29500"]
    with pytest.raises(SystemExit, match="NNODES=2 needs MASTER_ADDR and NODE_RANK"):
        torchrun_command(["x.yaml"], {"NNODES": "2"})


def test_stage_environment_and_local_model_must_exist(tiny_sft_overrides, tmp_path, sft_schema_cache):
    with pytest.raises(SftError, match=r"stage environment .*no_env' has no .*no_env/bin/python"):
        run_sft(tiny_sft_overrides(f"cluster.envs.sft={tmp_path / 'no_env'}"), dry_run=True, quiet=True)
    with pytest.raises(SftError, match=rf"model.path={tmp_path}/no_model: no such folder"):
        run_sft([*tiny_sft_overrides(), f"model.path={tmp_path}/no_model"], dry_run=True, quiet=True)


def test_a_model_folder_without_a_tokenizer_or_a_verl_checkpoint_is_named(tiny_sft_overrides, tiny_model_dir, tmp_path,
                                                                          sft_schema_cache):
    # It was LLaMA-Factory's "need sentencepiece or tiktoken" traceback, or a verl folder trained from wrong files.
    import shutil

    bare = shutil.copytree(tiny_model_dir, tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(SftError, match=r"not a model folder: missing a tokenizer"):
        run_sft([*tiny_sft_overrides(), f"model.path={bare}"], dry_run=True, quiet=True)
    shutil.copytree(tiny_model_dir, tmp_path / "ckpt" / "actor" / "huggingface")
    with pytest.raises(SftError, match=r"a verl checkpoint folder; its Hugging Face model is .*actor/huggingface"):
        run_sft([*tiny_sft_overrides(), f"model.path={tmp_path / 'ckpt'}"], dry_run=True, quiet=True)


def test_data_errors_name_the_file(tiny_sft_overrides, sft_dataset, tmp_path, sft_schema_cache):
    data_dir, _ = sft_dataset
    with pytest.raises(SftError, match=r"dataset_info.json: no dataset 'lvkc_stf'; did you mean 'lvkc_sft'"):
        run_sft(tiny_sft_overrides("data.dataset=lvkc_stf"), dry_run=True, quiet=True)
    with pytest.raises(SftError, match=rf"data.dataset_dir={tmp_path / 'nowhere'}: no dataset_info.json"):
        run_sft(tiny_sft_overrides(f"data.dataset_dir={tmp_path / 'nowhere'}"), dry_run=True, quiet=True)
    (data_dir / "lvkc_sft.json").unlink()
    with pytest.raises(SftError, match=r"dataset_info.json: dataset 'lvkc_sft' names 'lvkc_sft.json', which is not"):
        run_sft(tiny_sft_overrides(), dry_run=True, quiet=True)


def test_unset_and_unknown_recipe_values_fail_clearly(tmp_path, sft_dataset, capsys):
    assert main(["--dry-run", f"output.dir={tmp_path}"]) == 2
    assert "data.dataset_dir" in capsys.readouterr().err  # `???` in recipes/sft.yaml
    data_dir, _ = sft_dataset
    assert main(["--dry-run", "model=tiny", f"data.dataset_dir={data_dir}"]) == 2
    assert "model.path" in capsys.readouterr().err
    assert main(["--dry-run", "cluster=a100_16x", f"data.dataset_dir={data_dir}"]) == 2  # no such recipe
    assert "a100_16x" in capsys.readouterr().err


def test_a_second_sft_on_an_output_folder_in_use_stops_at_once(tiny_sft_overrides, tmp_path, sft_schema_cache):
    # Two commands on one output.dir both chose run_001 (new) and trained into it together.
    from medsage.lock import folder_lock

    root = tmp_path / "runs"
    with folder_lock(root, "SFT run"):  # a real flock, as a running `medsage sft` holds it
        with pytest.raises(SftError, match=r"in use by another SFT run"):
            run_sft(tiny_sft_overrides(out_dir=root))
    assert not (root / "run_001").exists()
