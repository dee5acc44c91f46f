"""What `medsage pipeline` refuses or holds before Hydra writes anything, and its stage paths as Hydra values.

No Ray here: ``app._cluster`` (which would start or join one) is replaced by a recorder, and a run that gets
that far stops there. The lock is a real flock held by this test, as a running pipeline holds it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medsage.launch.pipeline import app

SECRET = "sk-inline-0123456789abcdef"
HOSTILE = "ünï 'q\";x"  # non-ASCII, both quotes and `;`: none of them is read unquoted by Hydra's grammar


class NoCluster(SystemExit):
    pass


@pytest.fixture
def started(monkeypatch, tmp_path):
    """The clusters a run asked for; a run that asks stops there (exit status 3)."""
    calls = []

    def record(*args, **kwargs):
        calls.append(args)
        raise NoCluster(3)

    monkeypatch.setattr(app, "_cluster", record)
    monkeypatch.chdir(tmp_path)
    return calls


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_a_second_pipeline_on_a_run_root_in_use_stops_naming_the_holder(tmp_path, started, capsys):
    from medsage.lock import folder_lock

    root = tmp_path / "runs"
    with folder_lock(root, "pipeline"):  # the first pipeline, still running
        rc = app.main(["+experiment=demo", f"run_root={root}"])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert "in use by another pipeline" in err and "pid " in err and "Traceback" not in err
        assert _files(root) == [".medsage.lock"]  # no job folder, no .hydra, no stage folder
        assert not started
    assert app.main(["+experiment=demo", f"run_root={root}"]) == 3  # released: the next run goes on to start Ray
    assert started


@pytest.mark.parametrize("key,override", [
    ("synthesis.api_key", [f"+synthesis.api_key={SECRET}"]),
    ("client.api_key", [f'synthesis_overrides=["+client.api_key={SECRET}"]']),
    ("synthesis.token", ["-m", f"+synthesis.token={SECRET},x"]),  # a sweep's value: in no composed config
])
def test_an_inline_key_is_refused_before_anything_is_written(tmp_path, started, capsys, key, override):
    root = tmp_path / "runs"
    rc = app.main(["+experiment=demo", f"run_root={root}", *override])
    out, err = capsys.readouterr()
    assert rc == 2, err
    assert SECRET not in out + err
    assert f"medsage pipeline: {key}: an API key may not be written" in err and "$OPENAI_API_KEY" in err, err
    assert "[REDACTED]" not in err and len(err.strip().splitlines()) == 1
    assert not root.exists() and not started


def test_a_missing_value_is_one_line_naming_the_key_and_leaves_nothing(tmp_path, started, capsys):
    root = tmp_path / "runs"
    rc = app.main([f"run_root={root}"])  # recipes/pipeline.yaml: eval_data_root is ???
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("medsage pipeline: eval_data_root is not set") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and not root.exists() and not started
    # A sweep's jobs may get values through the sweep (paper_table3's rows): each job checks its own, after Hydra
    # wrote its .hydra folder, and says it in one line too.
    rc = app.main([f"run_root={root}", "-m", "alpha=0.1,0.2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("medsage pipeline: eval_data_root is not set"), err
    assert "Traceback" not in err and not started


@pytest.mark.parametrize("value", ["0", "-2", "2.5", "many"])
def test_a_ray_cpu_count_that_is_no_count_stops_before_ray(tmp_path, started, capsys, value):
    rc = app.main(["+experiment=demo", f"run_root={tmp_path / 'runs'}", f"ray_num_cpus={value}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"ray_num_cpus={value}" in err and "Traceback" not in err, err
    assert not started and not (tmp_path / "runs" / "store").exists()


def test_stage_paths_under_a_hostile_run_root_reach_each_stage_as_they_are(tmp_path):
    """The real stage commands of the demo (recipes/stages/demo.yaml), planned under a run_root Hydra cannot read
    unquoted, composed by each stage's own recipe as its verb composes them: every folder arrives exactly."""
    from omegaconf import OmegaConf

    from medsage.launch.pipeline.dag import plan_stages
    from medsage.launch.rl import compose_recipe
    from medsage.recipes import compose, hydra_value, register_resolvers

    register_resolvers()
    root = tmp_path / HOSTILE
    cfg = compose("pipeline", ["+experiment=demo", f"run_root={hydra_value(str(root))}"])
    stages = {s.name: s for s in plan_stages(OmegaConf.to_container(cfg.stages, resolve=True), root / "store")}
    out = {name: str(s.out_dir) for name, s in stages.items()}
    assert all(HOSTILE in d for d in out.values())

    data = stages["data"].command()
    assert data[:4] == ["data", "run", "--config", "demo"]
    recipe = compose("data/demo", data[4:])  # what `medsage data run --config demo ...` composes
    assert recipe.out_dir == out["data"] and recipe.sources[0].root == f"{out['sources']}/DeepLesion"
    assert list(recipe.dedup.eval_dirs) == [out["benchmarks"]]
    synth = stages["synth"].command()  # argparse flags: the folders as they are
    assert synth[synth.index("--out") + 1] == out["synth"]
    assert synth[synth.index("--records") + 1].startswith(out["data"])
    sft = compose("sft", stages["sft"].command()[1:])
    assert sft.output.dir == out["sft"] and sft.model.path == out["model"]
    assert sft.data.dataset_dir.startswith(out["synth"] + "/")
    rl = compose_recipe(stages["rl"].command()[1:])
    assert rl.output_dir == out["rl"] and rl.model.path == f"{out['sft']}/run_001"
    ev = compose("eval", stages["eval"].command()[2:])
    assert ev.eval.output_dir == out["eval"] and ev.eval.data_root == out["benchmarks"]
    assert ev.model.path.startswith(out["rl"] + "/")


def test_hydra_values_of_any_path_read_back_the_same(tmp_path):
    from medsage.recipes import compose, hydra_value

    for path in ["/plain/path", "/a b/c", f"/{HOSTILE}/x", "/back\\slash\\", "/it's", "/x${y}", "/é", "/1e5", "true"]:
        cfg = compose("eval", ["eval.data_root=x", f"eval.output_dir={hydra_value(path)}"])
        assert cfg.eval.output_dir == path, hydra_value(path)
    assert hydra_value("/plain/path") == "/plain/path"  # what needs no quotes gets none
