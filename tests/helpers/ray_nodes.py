"""A two-node Ray cluster on this machine for the multi-node tests: every Ray process bound to 127.0.0.1.

Why not ``ray start --head`` and ``ray start --address``: a second node joins only with Ray's cluster mode on
(``ray start`` refuses it otherwise), and in cluster mode Ray replaces 127.0.0.1 by the machine's interface
address, where its agents then listen. Ray's own multi-node tests start their nodes in one process with
``ray.cluster_utils.Cluster`` instead, which runs either way; with cluster mode off (as medsage's embedded
cluster runs) both nodes stay on loopback. ``RAY_TMPDIR`` keeps the session and Ray's "current cluster" file
in a folder of the test's own, so no other Ray on the machine sees this one.

Node 2 can be given a filesystem view of its own: it is started in a private mount namespace (Linux, root or
CAP_SYS_ADMIN) with an empty tmpfs over ``hidden``, so a path there is one the head node and the test see and
node 2 does not, as a folder on one machine's local disk is to another machine. Where namespaces are not
allowed, ``Nodes.hidden`` is None and the tests that need it skip.

Everything Ray started belongs to the helper process (its children and their reapers); closing its stdin
shuts the cluster down, and ``close`` waits for that and removes the temp folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_HELPER = r'''
import ctypes, json, os, subprocess, sys
from ray.cluster_utils import Cluster

a = json.loads(sys.argv[1])
cluster = Cluster(initialize_head=True, head_node_args=dict(
    node_ip_address="127.0.0.1", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
    dashboard_port=a["dashboard"], ray_client_server_port=a["client"], dashboard_agent_listen_port=a["agent"]))
hidden = None
if a["hidden"]:
    # Only what starts after this (node 2) lives in the new mount namespace; the head node's processes do not.
    CLONE_NEWNS = 0x00020000
    if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNS) == 0:
        ok = subprocess.run(["mount", "--make-rprivate", "/"]).returncode == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", a["hidden"]]).returncode == 0
        hidden = a["hidden"] if ok else None
node2 = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=2, resources={"node2": 1})
print("READY " + json.dumps({"gcs": cluster.address, "head": cluster.head_node.node_id, "node2": node2.node_id,
                              "hidden": hidden}), flush=True)
sys.stdin.read()
cluster.shutdown()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Nodes:
    proc: subprocess.Popen
    temp: Path            # RAY_TMPDIR: the session, logs, sockets
    gcs: str              # 127.0.0.1:<port>
    dashboard: str        # http://127.0.0.1:<port>
    client: str           # ray://127.0.0.1:<port>
    head: str             # node ids
    node2: str
    hidden: Path | None   # a folder node 2 sees as empty (None: no mount namespace here)

    def close(self) -> None:
        """Shut the cluster down (its processes are the helper's), then remove its temp folder."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.temp, ignore_errors=True)


def start(hidden: Path | None = None, timeout_s: float = 240.0) -> Nodes:
    """Start the head node and node 2 (custom resource ``node2``); ``hidden``: see the module docstring."""
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths live under it
    # Ray's fixed defaults (8265, 10001, 52365 for the head's dashboard agent) may be another cluster's on this machine
    ports = {"dashboard": _free_port(), "client": _free_port(), "agent": _free_port()}
    env = {**os.environ, "RAY_TMPDIR": str(temp), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    args = json.dumps({**ports, "hidden": str(hidden) if hidden else None})
    log = (temp / "helper.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", _HELPER, args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=log, text=True, env=env)
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    line = proc.stdout.readline() if sel.select(timeout_s) else ""
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the two-node Ray cluster did not start:\n{(temp / 'helper.log').read_text()[-3000:]}")
    info = json.loads(line[len("READY "):])
    return Nodes(proc, temp, info["gcs"], f"http://127.0.0.1:{ports['dashboard']}", f"ray://127.0.0.1:{ports['client']}",
                 info["head"], info["node2"], Path(info["hidden"]) if info["hidden"] else None)


def ray_processes(temp: Path) -> list[str]:
    """Command lines of the processes of the cluster under ``temp`` still alive (raylets, GCS, workers, agents)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if str(temp) in cmd or (p.info["environ"] or {}).get("RAY_TMPDIR") == str(temp):
                out.append(cmd)
        except psutil.Error:
            pass
    return out
