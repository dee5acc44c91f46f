"""medsage on a two-node Ray cluster: the cluster check, stages placed on the second node, a command submitted by
address, and SFT as one LLaMA-Factory launch per node.

What is real and what is simulated (tests/helpers/ray_nodes.py):
- two real Ray nodes on this machine (two raylets, one GCS, all on 127.0.0.1); Ray places jobs and tasks on them
  by custom resource (``node2``), placement group and node affinity, as it would on two machines;
- node 2 sees the filesystem through a mount namespace of its own with an empty tmpfs over one folder
  (``hidden``): a path there exists for the pipeline and the head node and not for node 2, as a folder on one
  machine's local disk is missing on another. The rest is the same disk, as shared storage would be. Without
  mount namespaces (not root) the test that needs them skips;
- both nodes are this CPU: the SFT's two ranks talk gloo over loopback, where GPUs would talk NCCL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray_nodes  # tests/helpers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    cluster = ray_nodes.start(hidden=tmp_path_factory.mktemp("node1_only"))
    yield cluster
    cluster.close()


def pipeline(*args: str, cwd: Path, recipes: Path | None = None) -> tuple[int, str]:
    extra = [f"hydra.searchpath=[file://{recipes}]"] if recipes else []
    proc = subprocess.run([sys.executable, "-m", "medsage.launch.cli", "pipeline", *extra, *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={k: v for k, v in os.environ.items()
                                                                            if k != "RAY_ADDRESS"})
    return proc.returncode, proc.stdout + proc.stderr


def test_a_folder_only_one_node_sees_stops_the_pipeline_before_any_stage(nodes, tmp_path):
    if nodes.hidden is None:
        pytest.skip("no mount namespace here (needs root or CAP_SYS_ADMIN): node 2 cannot be given its own view")
    env = nodes.hidden / "env"  # the venv the tests run in, at a path node 2 does not have
    env.symlink_to(sys.prefix, target_is_directory=True)
    run_root = nodes.hidden / "runs"
    rc, out = pipeline("+experiment=demo", f"run_root={run_root}", f"cluster.envs.sft={env}",
                       f"cluster.ray_address={nodes.dashboard}", cwd=tmp_path)
    assert rc == 2, out
    assert "the Ray cluster is not ready for this run (nothing was started)" in out
    problems = [line for line in out.splitlines() if line.startswith("  - node ")]
    assert problems and all(f"node {nodes.node2} " in p and "resources node2" in p for p in problems), out
    shared = next(p for p in problems if "cannot read" in p)
    assert str(run_root / "store") in shared and "Fix: put run_root on storage every node mounts" in shared
    missing = next(p for p in problems if f"{env}/bin/python does not exist here" in p)
    assert "it runs stages sft" in missing
    assert not [d for d in (run_root / "store").iterdir()], "a stage started"  # the check's own file is gone too


def test_a_command_is_submitted_to_the_cluster_by_its_dashboard_address(nodes, tmp_path):
    """The standalone route of `medsage rl` / `medsage sft` with an http:// address, which ray.init refuses."""
    probe = tmp_path / "probe.py"  # what the command sees: the variable it was given, and node 2's own filesystem
    probe.write_text("import os, sys\nprint('env', os.environ['MEDSAGE_PROBE'])\n"
                     "print('sees the hidden folder:', os.path.exists(sys.argv[1]))\nsys.exit(3)\n")
    seen = (nodes.hidden or tmp_path) / "seen"
    seen.write_text("the head node and the test see this")
    proc = subprocess.run([sys.executable, "-m", "medsage.launch.pipeline.submit", "--address", nodes.dashboard,
                           "--python", sys.executable, "--env", "MEDSAGE_PROBE=carried", "--resources", '{"node2": 1}',
                           "--", sys.executable, str(probe), str(seen)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # the job's exit status is the command's
    assert "env carried" in proc.stdout and f"ran on Ray node {nodes.node2}" in proc.stdout, proc.stdout
    if nodes.hidden is not None:
        assert "sees the hidden folder: False" in proc.stdout  # it ran in node 2's view of the disk


def test_stages_land_on_node2_and_sft_trains_across_both_nodes(nodes, tmp_path, tiny_model_dir, sft_dataset):
    data_dir, dataset = sft_dataset
    recipes = tmp_path / "recipes"
    (recipes / "stages").mkdir(parents=True)
    # Two real stages, both held to node 2 by its custom resource; SFT's two ranks are placed by Ray, one per node.
    (recipes / "stages" / "two_nodes.yaml").write_text(f"""
sources:
  env: data
  argv: [data, demo-sources, "{{out}}"]
  resources: {{node2: 1}}
sft:
  env: sft
  argv: [sft, model=tiny, "model.path={tiny_model_dir}", sft=tiny_cpu, "cluster=${{stage_cluster:${{cluster}}}}",
         "data.dataset_dir={data_dir}", "data.dataset={dataset}", "output.dir={{out}}", sft.num_train_epochs=1]
  resources: {{node2: 1}}
""")
    runs = tmp_path / "runs"
    rc, out = pipeline("stages=two_nodes", "model=tiny", "cluster=local_cpu", "cluster.nnodes=2", "name=two_nodes",
                       f"run_root={runs}", f"cluster.ray_address={nodes.client}", cwd=tmp_path, recipes=recipes)
    assert rc == 0, out
    assert "cluster check: every node reads the stage store" in out
    stages = {d.name.split("-")[0]: json.loads((d / "stage.json").read_text()) for d in (runs / "store").iterdir()}
    assert {name: s["node"] for name, s in stages.items()} == {"sources": nodes.node2, "sft": nodes.node2}
    assert all(s["status"] == "finished" for s in stages.values())
    sft_dir = next((runs / "store").glob("sft-*"))
    log = (sft_dir / "run_001" / "train.log").read_text()
    ranks = {line.split()[3]: line.split()[8] for line in log.splitlines() if line.startswith("medsage: node rank ")}
    assert set(ranks) == {"0", "1"} and set(ranks.values()) == {nodes.head, nodes.node2}, log[-3000:]
    assert "world size: 2" in log and log.count("distributed training: True") == 2
    manifest = json.loads((sft_dir / "run_001" / "medsage_manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["attempts"][-1]["mode"] == "ray"
    assert len(manifest["losses"]) == 3  # 12 samples, 2 per rank per step, 2 ranks: 3 steps
    assert (sft_dir / "run_001" / "model.safetensors").exists()


def test_the_cluster_stops_and_leaves_nothing_running(nodes):
    nodes.close()
    deadline = time.time() + 30  # the dashboard's module processes go a moment after it
    while (left := ray_nodes.ray_processes(nodes.temp)) and time.time() < deadline:
        time.sleep(1)
    assert not [p for p in left if "raylet" in p or "gcs_server" in p], left
    assert not left, left
