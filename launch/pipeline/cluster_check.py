"""Is a running Ray cluster ready for a run? Checked on every node before the pipeline's first stage.

A stage runs as a Ray job on whichever node Ray picks, and SFT and RL spread over several; each reads what
the others wrote by path. So on every alive node of the cluster:

- the run folder is shared: a file the pipeline writes into the stage store is read back, with the same
  content, by a Ray task pinned to that node (``NodeAffinitySchedulingStrategy``);
- each stage's interpreter is there at the same path, runs, and imports medsage from the same file as on
  this machine (verl's reward and agent-loop workers load medsage's files by this machine's paths).

``cluster_problems`` returns the problems, each naming the node and the fix (empty: ready). The probes run as one
Ray job (``python -m medsage.launch.pipeline.cluster_check``): the Jobs API takes every address form the
pipeline does, and the job's own ``ray.init`` joins the cluster whatever that form was. The probe tasks run on the
cluster's own Python (no ``py_executable``), so a node that lacks a stage's interpreter still answers, saying so.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

MARK = "MEDSAGE_CLUSTER_CHECK "  # the job's answer: this, then JSON, on one line of its log
PROBE_TIMEOUT_S = 180.0          # a node whose probe has not answered by then is reported, not waited for
_WHERE_MEDSAGE = "import medsage; print(medsage.__file__)"


def _medsage_file(python: str) -> str | None:
    """Where ``python`` imports medsage from (run with cwd=/: a checkout in the cwd cannot stand in), or None."""
    try:
        proc = subprocess.run([python, "-c", _WHERE_MEDSAGE], capture_output=True, text=True, timeout=120, cwd="/",
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None


def cluster_problems(client, run_folder: str | Path, pythons: dict[str, list[str]], nodes: int = 1,
                     gpus_per_node: int = 0) -> list[str]:
    """What keeps the cluster behind ``client`` (a Jobs API client) from running stages that write into ``run_folder``
    with the interpreters ``pythons`` (interpreter -> the stages that use it) on ``nodes`` nodes of ``gpus_per_node``
    GPUs (``cluster.nnodes``, ``cluster.gpus_per_node``); each problem says where and how to fix it."""
    from medsage.launch.pipeline.ray_jobs import run_job

    run_folder = Path(run_folder)
    problems, expected = [], {}
    for python, stages in pythons.items():
        found = _medsage_file(python)
        if found is None:
            problems.append(f"{python} (stages {', '.join(stages)}) cannot import medsage on this machine: "
                            f"install medsage into that environment (`uv pip install --python {python} -e .`)")
        expected[python] = found
    token = run_folder / f".medsage-cluster-check-{secrets.token_hex(8)}"
    secret = secrets.token_hex(16)
    try:
        run_folder.mkdir(parents=True, exist_ok=True)
        token.write_text(secret)
    except OSError as err:
        problems.append(f"cannot write {token} here ({err.strerror}): run_root must be a folder this machine can write")
        return problems
    spec = {"token": str(token), "secret": secret, "pythons": expected}
    runner = next(iter(pythons), sys.executable)
    try:
        result = run_job(client, f"exec {shlex.quote(runner)} -m medsage.launch.pipeline.cluster_check "
                                 f"{shlex.quote(json.dumps(spec))}", None)
        logs = client.get_job_logs(result.submission_id)
    finally:
        token.unlink(missing_ok=True)
    answer = next((line[len(MARK):] for line in logs.splitlines() if line.startswith(MARK)), None)
    if not result.ok or answer is None:
        tail = "\n      ".join(logs.strip().splitlines()[-8:])
        problems.append(f"the cluster check could not run as a Ray job on the head node ({result.status}, exit status "
                        f"{result.exit_code}): {runner} must exist there at this path (the pipeline runs every "
                        f"stage's command with it). Its log ends:\n      {tail}")
        return problems
    found = json.loads(answer)
    for node in found:
        where = _describe(node)
        for kind, detail in node["problems"]:
            problems.append(f"node {where}: {detail}. Fix: {_fix(kind, run_folder, pythons, detail)}")
    fitting = [n for n in found if n["resources"].get("GPU", 0) >= gpus_per_node]
    if len(fitting) < nodes:
        have = "; ".join(f"{_describe(n)}: {n['resources'].get('GPU', 0):g} GPU" for n in found)
        problems.append(f"cluster.nnodes={nodes} with cluster.gpus_per_node={gpus_per_node}, but {len(fitting)} "
                        f"node(s) of the cluster have that many GPUs ({have}). Fix: start Ray on more nodes "
                        "(`ray start --address=<head>:6379` on each), or lower cluster.nnodes / cluster.gpus_per_node")
    return problems


def _describe(node: dict) -> str:
    custom = sorted(k for k in node.get("resources", {}) if k not in ("CPU", "GPU", "memory", "object_store_memory")
                    and not k.startswith(("node:", "accelerator_type:")))
    extra = f"; resources {', '.join(custom)}" if custom else ""
    return f"{node['node']} ({node['ip']}, host {node['host']}{extra})"


def _fix(kind: str, run_folder: Path, pythons: dict[str, list[str]], detail: str) -> str:
    if kind == "shared":
        return (f"put run_root on storage every node mounts at the same path (NFS, Lustre, a cloud file system), "
                f"e.g. run_root=/shared/medsage/runs; {run_folder} is not that folder on this node")
    if kind == "python":
        python = detail.split(" ", 1)[0]
        stages = ", ".join(pythons.get(python, [])) or "?"
        return (f"create that environment at the same path on this node, or keep it on shared storage (it runs "
                f"stages {stages}; cluster.envs.<stage> names it, null meaning the pipeline's own interpreter)")
    if kind == "medsage":
        return ("install medsage into that environment on this node at the same path as on the others (an editable "
                "install needs its checkout on shared storage or at the same path everywhere)")
    return "check the node: `ray status` on the head node, and the node's raylet log"


# --------------------------------------------------------------------------------------------
# the job: one probe task pinned to each alive node
# --------------------------------------------------------------------------------------------
def _probe(token: str, secret: str, pythons: dict[str, str | None]) -> dict:
    """Runs on one node (the standard library and ray only: it is sent by value and runs on the cluster's Python)."""
    import os
    import socket
    import subprocess

    import ray

    problems = []

    def note(kind: str, detail: str) -> None:
        problems.append((kind, detail))

    try:
        with open(token) as fh:
            if fh.read() != secret:
                note("shared", f"{token} holds other content than the pipeline wrote: "
                               "another folder is mounted at that path here")
    except OSError as err:
        note("shared", f"cannot read {token}, which the pipeline wrote ({err.strerror}): "
                       "the run folder is not shared with this node")
    for python, medsage_file in pythons.items():
        if not os.access(python, os.X_OK):
            note("python", f"{python} does not exist here")
            continue
        proc = subprocess.run([python, "-c", "import medsage; print(medsage.__file__)"], capture_output=True,
                              text=True, timeout=120, cwd="/", check=False)
        found = proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else None
        if found is None:
            note("medsage", f"{python} cannot import medsage here ({(proc.stderr.strip().splitlines() or ['?'])[-1]})")
        elif medsage_file and found != medsage_file:
            note("medsage", f"{python} imports medsage from {found} here but from {medsage_file} on the "
                            "pipeline's machine, whose paths the RL workers load files by")
    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "host": socket.gethostname(),
            "problems": problems}


def _job(spec: dict) -> list[dict]:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ray.init(address="auto", log_to_driver=False)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(_probe)
    refs = {probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(spec["token"], spec["secret"], spec["pythons"]): n for n in nodes}
    done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    out = []
    for ref, node in refs.items():
        base = {"node": node["NodeID"], "ip": node["NodeManagerAddress"], "host": node.get("NodeManagerHostname", "?"),
                "resources": node.get("Resources", {})}
        if ref in done:
            try:
                out.append({**base, **ray.get(ref)})
            except ray.exceptions.RayError as err:
                out.append({**base, "problems": [("ray", f"the probe failed: {str(err).splitlines()[0]}")]})
        else:
            late = f"the probe did not run within {PROBE_TIMEOUT_S:.0f} s (no worker could start there)"
            out.append({**base, "problems": [("ray", late)]})
    return out


if __name__ == "__main__":
    print(MARK + json.dumps(_job(json.loads(sys.argv[1]))), flush=True)
