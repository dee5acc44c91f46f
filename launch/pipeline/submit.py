"""Run one command as a Ray job on a running cluster, from outside it: its log streams here, its exit status is ours.

    python -m medsage.launch.pipeline.submit --address http://head:8265 [--python P] [--env K=V ...] -- cmd ...

Why: ``ray.init`` takes a GCS address (``head:6379``, and only from a machine of the cluster) or a Ray Client one
(``ray://head:10001``), never the dashboard's (``http://head:8265``: "Invalid Ray address"); the Jobs API takes all
three. So a command that calls ``ray.init`` itself (verl's driver, the SFT's per-node launch) is not pointed at
the cluster: it is submitted to it as a job, where ``RAY_ADDRESS`` is the cluster's own and every Ray call joins
it. ``medsage rl`` and ``medsage sft`` do this (``wrap``) when ``cluster.ray_address`` (or ``RAY_ADDRESS``) names a
cluster and they are not a job already; a pipeline's stages are jobs from the start.

The job runs ``cmd`` as it is: its paths must mean the same on the node Ray picks (the head node, or one with
``--resources``) as here, i.e. on storage every node mounts (docs/multinode.md). Stopping this process (Ctrl-C,
or the SIGTERM ``medsage.runtime.run_logged`` sends when its caller dies) stops the job.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import sys

EXIT_MARK = "medsage: the command exited with status "


def wrap(address: str, command: list[str], *, python: str | None = None, env: dict[str, str] | None = None,
         resources: dict[str, float] | None = None) -> list[str]:
    """The command line that runs ``command`` as a job on ``address``: with ``env`` set, its Ray workers on
    ``python`` (the stage's interpreter, the same path on every node), holding ``resources`` on its node."""
    out = [python or sys.executable, "-m", "medsage.launch.pipeline.submit", "--address", address]
    if python:
        out += ["--python", python]
    for key, value in (env or {}).items():
        out += ["--env", f"{key}={value}"]
    if resources:
        out += ["--resources", json.dumps(resources, sort_keys=True)]
    return [*out, "--", *command]


async def _follow(client, sid: str) -> None:
    """Print the job's log as it is written, until the job ends (Ray's log stream, not repeated whole-log polls)."""
    async for chunk in client.tail_job_logs(sid):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def env_pair(text: str) -> tuple[str, str]:
    """``--env NAME=VALUE`` (of this command and of per_node.py); an empty value is one (CUDA_VISIBLE_DEVICES=)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--env {text!r}: expected NAME=VALUE")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medsage.launch.pipeline.submit",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="ray://head:10001 | http://head:8265 | head:6379")
    parser.add_argument("--python", help="the interpreter of the job's Ray workers (runtime_env py_executable)")
    parser.add_argument("--env", action="append", type=env_pair, default=[], help="NAME=VALUE for the job (repeatable)")
    parser.add_argument("--resources", type=json.loads, default=None, help='what the job holds, e.g. \'{"GPU": 8}\'')
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command after --")

    from medsage.launch.pipeline.ray_jobs import ClusterError, jobs_client, submit, wait

    try:
        client = jobs_client(args.address)
    except ClusterError as err:
        print(f"medsage: {err}", file=sys.stderr)
        return 2
    runtime_env: dict = {"env_vars": dict(args.env)}
    if args.python:
        runtime_env["py_executable"] = args.python
    # The shell reports the command's exit status in the log too: Ray may record a job that ended the moment it
    # looked as "failed to get job supervisor", without the exit status (seen on a loaded 2-core machine).
    entrypoint = f'{shlex.join(command)}; status=$?; echo "{EXIT_MARK}$status"; exit $status'
    sid = submit(client, entrypoint, runtime_env=runtime_env, resources=args.resources)
    print(f"medsage: submitted to the Ray cluster at {args.address} as job {sid}", flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        try:
            asyncio.run(_follow(client, sid))
        except RuntimeError:  # the log stream broke off: poll for the rest
            pass
        result = wait(client, sid, None)
    except KeyboardInterrupt:
        client.stop_job(sid)
        print(f"medsage: stopped job {sid}", file=sys.stderr, flush=True)
        return 130
    if result.node:
        print(f"medsage: job {sid} ran on Ray node {result.node}", flush=True)
    if result.exit_code is not None:
        return result.exit_code
    said = [line[len(EXIT_MARK):] for line in client.get_job_logs(sid).splitlines() if line.startswith(EXIT_MARK)]
    if said and said[-1].strip().isdigit():
        return int(said[-1])
    print(f"medsage: job {sid} {result.status}: {result.message}", file=sys.stderr)  # it never ran: e.g. no runtime env
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
