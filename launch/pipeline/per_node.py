"""One command per node of the Ray cluster this process runs in, ranked as torchrun's multi-node launch wants.

    python -m medsage.launch.pipeline.per_node --nodes 2 --gpus-per-node 8 [--env K=V ...] -- llamafactory-cli train x

Ray places the nodes: a placement group of ``--nodes`` bundles on distinct nodes (STRICT_SPREAD), each holding
``--gpus-per-node`` GPUs (Ray sets the task's CUDA_VISIBLE_DEVICES to them), and one task per bundle runs the
command with NODE_RANK (its bundle's index), MASTER_ADDR (bundle 0's node) and MASTER_PORT (free there) added
to ``--env``. With ``llamafactory-cli train`` and FORCE_TORCHRUN=1 NNODES NPROC_PER_NODE that is LLaMA-Factory's
own multi-node launch: its launcher hands them to torchrun on each node (``plugins/engines/llamafactory.py``).

Why not LLaMA-Factory's Ray mode (USE_RAY=1, RayArguments): in 0.9.5 it reserves a placement group of *every*
accelerator of the cluster, each bundle with 10 CPUs (``train/trainer_utils.get_placement_group``), whatever
``ray_num_workers`` says, so a node with fewer than 10 CPUs per GPU never gets it; on CPU it asks for 10 times the
cluster's CPUs and waits forever; and its workers take the driver's whole environment.

Each node's output reaches this process through Ray's log forwarding, prefixed with the task and node address.
The command runs under a small shim (``--child``) that leads its own process group and ends it when the task
ends, however it ends (a stopped job, a failed node): no trainer outlives the launch. The exit status is the
first failing node's, and the others are stopped then.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

PLACEMENT_PATIENCE_S = 600.0  # how long the nodes' resources may stay busy before the launch gives up


def placed(nodes: int, gpus_per_node: int, command: list[str], env: dict[str, str], python: str) -> list[str]:
    """The command line that runs ``command`` with ``env`` once on each of ``nodes`` nodes (``python``: the stage's)."""
    out = [python, "-m", "medsage.launch.pipeline.per_node", "--nodes", str(nodes),
           "--gpus-per-node", str(gpus_per_node)]
    for key, value in env.items():
        out += ["--env", f"{key}={value}"]
    return [*out, "--", *command]


def _node_address() -> tuple[str, int]:
    """(this node's Ray address, a free TCP port on it): the rendezvous of rank 0."""
    import socket

    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        return ray.util.get_node_ip_address(), s.getsockname()[1]


def _run_on_node(command: list[str], env: dict[str, str], rank: int) -> dict:
    """A Ray task: ``command`` under the shim, its output line by line into this worker's log (Ray forwards it)."""
    import ray

    full = {**os.environ, **env}
    if os.path.isabs(command[0]):  # what it calls by name (LLaMA-Factory's launcher: `torchrun`) from its own bin/
        full["PATH"] = os.pathsep.join([os.path.dirname(command[0]), full.get("PATH", "")])
    shim = [sys.executable, "-m", "medsage.launch.pipeline.per_node", "--child", "--", *command]
    proc = subprocess.Popen(shim, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    for line in iter(proc.stdout.readline, b""):
        sys.stdout.write(line.decode(errors="replace"))
        sys.stdout.flush()
    code = proc.wait()
    ctx = ray.get_runtime_context()
    return {"rank": rank, "node": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "exit": code}


def _child(command: list[str]) -> int:
    """Lead a process group (the caller starts us in a new session), run ``command`` in it, and end the whole group
    if our parent, the Ray task, goes away first (``medsage.runtime.exit_with_parent``)."""
    from medsage.runtime import exit_with_parent

    exit_with_parent()
    return subprocess.call(command)


def _nodes_summary(ray) -> str:
    rows = []
    for node in ray.nodes():
        if node.get("Alive"):
            res = node.get("Resources", {})
            rows.append(f"{node['NodeID'][:12]} ({node['NodeManagerAddress']}): {res.get('GPU', 0):g} GPU, "
                        f"{res.get('CPU', 0):g} CPU")
    return "; ".join(rows) or "none alive"


def launch(nodes: int, gpus_per_node: int, command: list[str], env: dict[str, str],
           patience_s: float = PLACEMENT_PATIENCE_S) -> int:
    """Run ``command`` once per node (see the module docstring); the first failing node's exit status, else 0."""
    # every node's lines as they are, not "[repeated 2x across cluster]", and without colour codes in train.log
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address="auto", log_to_driver=True)  # the cluster of the job this runs in (RAY_ADDRESS)
    bundle = {"CPU": 1.0, **({"GPU": float(gpus_per_node)} if gpus_per_node else {})}
    fitting = [n for n in ray.nodes()
               if n.get("Alive") and all(n.get("Resources", {}).get(k, 0) >= v for k, v in bundle.items())]
    if len(fitting) < nodes:
        print(f"medsage: the Ray cluster has {len(fitting)} node(s) with {gpus_per_node} GPU(s) and a CPU, and this "
              f"run needs {nodes} (cluster.nnodes={nodes}, cluster.gpus_per_node={gpus_per_node}). Nodes: "
              f"{_nodes_summary(ray)}. Start more nodes (`ray start --address=<head>:6379` on each) or lower "
              "cluster.nnodes.", file=sys.stderr)
        return 2
    pg = placement_group([bundle] * nodes, strategy="STRICT_SPREAD")
    if not pg.wait(timeout_seconds=patience_s):
        remove_placement_group(pg)
        print(f"medsage: {nodes} nodes with {bundle} free did not become available within {patience_s:.0f} s "
              f"(another job holds them?). Nodes: {_nodes_summary(ray)}", file=sys.stderr)
        return 2

    def on(index: int):
        return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)

    addr, port = ray.get(ray.remote(_node_address).options(num_cpus=0, scheduling_strategy=on(0)).remote())
    task = ray.remote(_run_on_node)
    refs = {task.options(num_cpus=1, num_gpus=gpus_per_node, scheduling_strategy=on(rank)).remote(
        command, {**env, "NNODES": str(nodes), "NODE_RANK": str(rank), "MASTER_ADDR": addr, "MASTER_PORT": str(port)},
        rank): rank for rank in range(nodes)}
    print(f"medsage: {nodes} node(s), rendezvous {addr}:{port}", flush=True)
    status = 0
    try:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayError as err:  # the task itself failed (its node died, it was cancelled)
                result = {"rank": refs[done[0]], "node": "?", "ip": "?", "exit": 1}
                print(f"medsage: node rank {refs[done[0]]} failed in Ray: {err}", file=sys.stderr, flush=True)
            print(f"medsage: node rank {result['rank']} ran on Ray node {result['node']} ({result['ip']}), "
                  f"exit status {result['exit']}", flush=True)
            if result["exit"] != 0 and status == 0:
                status = result["exit"]
                for ref in pending:  # the others wait for a rank that will never come: stop them
                    ray.cancel(ref, force=True)
    finally:
        remove_placement_group(pg)
        ray.shutdown()
    return status


def main(argv: list[str] | None = None) -> int:
    from medsage.launch.pipeline.submit import env_pair

    parser = argparse.ArgumentParser(prog="python -m medsage.launch.pipeline.per_node",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1, help="how many nodes (one command each)")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs each node's command holds")
    parser.add_argument("--env", action="append", type=env_pair, default=[],
                        help="NAME=VALUE for every node (repeatable)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the shim a task runs it under
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")
    if args.child:
        return _child(command)
    if args.nodes < 1 or args.gpus_per_node < 0:
        parser.error("--nodes must be >= 1 and --gpus-per-node >= 0")
    return launch(args.nodes, args.gpus_per_node, command, dict(args.env))


if __name__ == "__main__":
    raise SystemExit(main())
