"""Run a chain of stage commands as Ray jobs, skipping what is already done and resuming what is not.

A stage is a ``medsage`` command line (recipes/stages/*.yaml) in which ``{out}`` stands for the
stage's own output folder and ``{<stage>}`` for an earlier stage's. Each folder is named by a hash
of what determines it: the command template, the recipe files it selects, and the keys of the stages it
reads. So

- rerunning the same pipeline finds every finished folder and skips it;
- an interrupted stage is rerun into the same folder, and the stage command resumes by itself
  (SFT from its last checkpoint, evaluation from its predictions file, the data pipeline from its
  done shards, synthesis from its call cache);
- a sweep (Hydra multirun) shares every stage upstream of the swept value: Table 4's α sweep runs
  data and SFT once, and RL and evaluation once per α.

``stage.json`` in each folder records the command, the key, the status, the times and the job's
exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from medsage.config import ConfigError, typed
from medsage.io import atomic_write_json
from medsage.launch import layout

STAGE_REF = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
GROUP_CHOICE = re.compile(r"[+~]*([A-Za-z_][\w/]*)=([\w.-]+)")  # `sft=tiny_learnable`, `+table5_row=sft`


def recipe_files(argv: list[str]) -> dict[str, str]:
    """Digest of each recipe file a stage command selects (its verb's root config, ``group=option`` and ``data
    --config NAME``), so that editing a selected recipe reruns the stage instead of finding it done."""
    from medsage.recipes import recipes_dir

    root = recipes_dir()
    names = [f"{argv[0]}.yaml"] if argv else []
    names += [f"{m.group(1)}/{m.group(2)}.yaml" for a in argv if (m := GROUP_CHOICE.fullmatch(a))]
    names += [f"data/{value}.yaml" for flag, value in zip(argv, argv[1:]) if flag == "--config"]
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest()[:16] for n in sorted(set(names))
            if (root / n).is_file()}


OVERRIDE = re.compile(r"([+~]*[A-Za-z_][\w.@/-]*=)(.*)", re.DOTALL)  # `key=value`: every stage verb composes it
_ITEMS = re.compile(r"([\[\],])")  # the separators of a list value, `dedup.eval_dirs=[{benchmarks},/x]`


def fill_refs(arg: str, dirs: dict[str, str]) -> str:
    """``arg`` with each ``{ref}`` replaced by the folder ``dirs[ref]``.

    A plain argument (``{out}``, the value after ``--records``) gets the folder as it is: argparse reads it
    whole. In a Hydra override (``out_dir={out}``, ``model.path={sft}/run_001``) each item holding a reference
    becomes one Hydra value (``medsage.recipes.hydra_value``): quoted where the folder has characters Hydra's
    grammar does not read unquoted (ü, quotes, ``;``), unchanged where it has none.
    """
    def sub(text: str) -> str:
        return STAGE_REF.sub(lambda m: dirs.get(m.group(1), m.group(0)), text)

    override = OVERRIDE.fullmatch(arg)
    if override is None or not STAGE_REF.search(override[2]):
        return sub(arg)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from medsage.recipes import hydra_value

    def item(text: str) -> str:
        bare = text.strip()
        if not STAGE_REF.search(bare):
            return text
        if bare[:1] in ("'", '"'):  # quoted in the recipe already: its string, read as Hydra reads it
            bare = OverridesParser.create().parse_override(f"k={bare}").value()
        return hydra_value(sub(bare))

    return override[1] + "".join(part if k % 2 else item(part) for k, part in enumerate(_ITEMS.split(override[2])))


class PipelineError(ValueError):
    """A stage list that cannot run (unknown reference, a stage that reads a later one)."""


@dataclass
class Stage:
    """One step: ``medsage <argv...>`` in the environment ``env``, writing into ``out_dir``."""

    name: str
    argv: list[str]  # templates: {out} and {<earlier stage>}
    store: Path
    env: str | None = None  # a virtualenv folder, "uv:..." or None for this interpreter
    after: list["Stage"] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)  # what its job holds on its node (StageSpec)

    @cached_property
    def key(self) -> str:  # once per plan: it hashes recipe files and every upstream key
        payload = json.dumps({"name": self.name, "argv": self.argv, "after": {s.name: s.key for s in self.after},
                              "recipes": recipe_files(self.argv)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    @property
    def out_dir(self) -> Path:
        return (self.store / f"{self.name}-{self.key}").resolve()

    def command(self) -> list[str]:
        dirs = {"out": str(self.out_dir), **{s.name: str(s.out_dir) for s in self.after}}
        return [fill_refs(a, dirs) for a in self.argv]

    def manifest(self) -> dict:
        path = self.out_dir / layout.STAGE
        return json.loads(path.read_text()) if path.exists() else {}


@dataclass
class StageSpec:
    """One entry of ``recipes/stages/<name>.yaml``, typed (``medsage.config.typed``)."""

    argv: list[str]                                      # the medsage command line; {out}, {<stage>} templates
    overrides: list[str] = field(default_factory=list)   # appended to argv (the recipe's <stage>_overrides)
    env: str | None = None                               # a cluster.envs key; None: this interpreter
    enabled: bool = True                                 # false leaves the stage out (Table 5's SFT row: no RL)
    # Ray resources its job holds on one node while the command runs (GPU, CPU, memory or a custom resource such
    # as {node2: 1}): Ray starts it on a node that has them free; none: the head node. Where it ran is not part of
    # its key. Evaluation holds the node's GPUs; SFT and RL place their own GPU workers (per-node launch, verl).
    resources: dict[str, float] = field(default_factory=dict)


def plan_stages(spec: dict[str, dict], store: str | Path, envs: dict | None = None) -> list[Stage]:
    """Stages in recipe order; ``{name}`` must name an earlier stage (or ``out``).

    A stage entry is ``{argv: [...], overrides: [...], env: <cluster.envs key>, enabled: true}``; its
    overrides are appended to argv, and ``enabled: false`` leaves it out (e.g. RL for Table 5's SFT row).
    """
    store = Path(store)
    envs = dict(envs or {})
    stages: dict[str, Stage] = {}
    for name, raw in spec.items():
        try:
            entry = typed(StageSpec, raw, f"stage {name!r}")
        except ConfigError as err:
            raise PipelineError(str(err)) from None
        if not entry.enabled:
            continue
        argv = [*entry.argv, *entry.overrides]
        after = []
        for ref in sorted({r for a in argv for r in STAGE_REF.findall(a)} - {"out"}):
            if ref not in stages:
                if ref in spec and not (spec[ref] or {}).get("enabled", True):
                    raise PipelineError(f"stage {name!r} refers to {{{ref}}}, but stage {ref!r} is disabled "
                                        f"(stages.{ref}.enabled=false): enable it, or change what {name!r} reads")
                later = " (it comes later; stages run in the order listed)" if ref in spec else ""
                raise PipelineError(f"stage {name!r} refers to {{{ref}}}, which is not an earlier stage{later}; "
                                    f"stages so far: {', '.join(stages) or 'none'}")
            after.append(stages[ref])
        stages[name] = Stage(name, argv, store, envs.get(entry.env) if entry.env else None, after,
                             {k: float(v) for k, v in entry.resources.items() if v})
    return list(stages.values())


@dataclass
class StageOutcome:
    stage: str
    status: str  # finished | done-before | failed
    out_dir: Path
    detail: str = ""


def _write_manifest(stage: Stage, **fields) -> None:
    data = stage.manifest() | {"stage": stage.name, "key": stage.key, "command": ["medsage", *stage.command()],
                               "after": {s.name: s.key for s in stage.after}} | fields
    atomic_write_json(stage.out_dir / layout.STAGE, data)


class _Gate:
    """A FIFO the job's shell reads one word from before it execs its stage: ``go`` starts it, EOF ends it.

    The next stage's job is submitted while the current one runs, so Ray's per-job start (a
    supervisor actor in a new worker process: seconds on a small machine) overlaps real work and
    the stage starts the moment the gate opens. Opening a FIFO read-write never blocks on Linux, and
    this end stays open until the job has ended, so a ``go`` written before the job's shell got to
    its ``read`` is not lost; if the pipeline dies, the job reads EOF and exits without running (or,
    not yet at its ``read``, is ended with the embedded cluster: gates are used on that cluster only).
    """

    def __init__(self, folder: Path, name: str):
        import os

        self.path = folder / f"{name}.fifo"
        os.mkfifo(self.path, 0o600)
        self.fd = os.open(self.path, os.O_RDWR)

    def wrap(self, entrypoint: str) -> str:
        return f'read -r go < {shlex.quote(str(self.path))}; [ "$go" = go ] || exit 75; {entrypoint}'

    def open(self) -> None:
        import os

        os.write(self.fd, b"go\n")

    def close(self) -> None:
        """EOF for a shell already reading; gone for one not there yet (it exits on the failed redirect)."""
        import os

        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def run_stages(stages: list[Stage], connect, *, resume_hint: str,
               nodes: tuple[int, int] = (1, 0)) -> list[StageOutcome]:
    """Run ``stages`` in order; stop at the first failure (reported, not raised).

    ``connect()`` returns a ``ray_jobs.ClusterStart``; it is called only if a stage is to run. Each
    stage's environment is resolved once, before that (a missing one stops the pipeline before its
    first stage and before Ray starts). On a cluster that was running already (possibly many nodes) the
    cluster check runs first (``cluster_check.cluster_problems``: the store and each stage's interpreter on
    every node, and ``nodes`` = (nnodes, gpus_per_node) nodes with that many GPUs); a problem raises
    ``PipelineError`` before any stage. While an embedded cluster is still starting, a stage whose turn comes
    runs as a local process (``local_jobs``); the others are Ray jobs, and on the embedded cluster the next
    stage's job is submitted ahead, behind a ``_Gate``.
    """
    import tempfile

    from medsage.launch.pipeline.local_jobs import may_run_locally, run_local
    from medsage.launch.pipeline.ray_jobs import runtime_env_for, submit, wait
    from medsage.runtime import EXIT_WITH_PARENT_ENV, stage_python

    todo = [s for s in stages if s.manifest().get("status") != "finished"]
    position = {s.name: k for k, s in enumerate(todo)}
    pythons = {s.env: stage_python(s.env) for s in todo}
    # Ray starts a job with OMP_NUM_THREADS=1; the stages run one at a time, so each may use every core, as
    # the same command run directly does (measured: SFT of the miniature on 2 cores ran on one).
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)
    job_envs = {s.env: runtime_env_for(s.env, {EXIT_WITH_PARENT_ENV: "1", "OMP_NUM_THREADS": threads}) for s in todo}
    cluster = connect() if todo else None
    embedded = bool(todo) and cluster.embedded
    if todo and not embedded:
        from medsage.launch.pipeline.cluster_check import cluster_problems

        users: dict[str, list[str]] = {}
        for s in todo:
            users.setdefault(pythons[s.env], []).append(s.name)
        problems = cluster_problems(cluster.client(), todo[0].store, users, *nodes)
        if problems:
            raise PipelineError("the Ray cluster is not ready for this run (nothing was started):\n  - "
                                + "\n  - ".join(problems))
        print(f"cluster check: every node reads the stage store {todo[0].store} and has the stages' interpreters "
              f"({', '.join(users)})", flush=True)
    gates_dir = Path(tempfile.mkdtemp(prefix="medsage-gates-")) if embedded else None
    ahead: dict[str, tuple[str, _Gate | None]] = {}

    def entrypoint(stage: Stage) -> str:
        # exec: the stage replaces the shell, so its parent is the job supervisor (or this process),
        # which it must not outlive.
        return "exec " + shlex.join([pythons[stage.env], "-m", "medsage.launch.cli", *stage.command()])

    def start(stage: Stage) -> tuple[str, _Gate | None]:
        gate = _Gate(gates_dir, stage.name) if gates_dir else None
        entry = entrypoint(stage)
        return submit(cluster.client(), gate.wrap(entry) if gate else entry, runtime_env=job_envs[stage.env],
                      resources=stage.resources), gate

    def submit_next(stage: Stage) -> None:
        """Once the cluster is up, the stage after ``stage`` waits at its gate on it."""
        later = todo[position[stage.name] + 1:]
        if gates_dir and later and later[0].name not in ahead and cluster.ready():
            ahead[later[0].name] = start(later[0])

    outcomes: list[StageOutcome] = []
    try:
        for i, stage in enumerate(stages, 1):
            head = f"[{i}/{len(stages)}] {stage.name:<10}"
            previous = stage.manifest()
            if stage.name not in position:
                print(f"{head} done before, skipped ({stage.out_dir})", flush=True)
                outcomes.append(StageOutcome(stage.name, "done-before", stage.out_dir))
                continue
            local = (stage.name not in ahead and embedded and not cluster.ready() and not stage.resources
                     and may_run_locally(stage.argv, stage.env))
            resumed = " (resuming)" if previous else ""
            where = " (here, while the Ray cluster starts)" if local else ""
            print(f"{head} running{resumed}{where}: {shlex.join(['medsage', *stage.command()])}", flush=True)
            stage.out_dir.mkdir(parents=True, exist_ok=True)
            started = time.time()
            _write_manifest(stage, status="running", started=started)
            try:
                if local:
                    result = run_local(entrypoint(stage), job_envs[stage.env]["env_vars"],
                                       stage.out_dir / layout.JOB_LOG, tick=lambda stage=stage: submit_next(stage))
                else:
                    sid, gate = ahead.pop(stage.name, None) or start(stage)
                    if gate:
                        gate.open()
                    submit_next(stage)
                    result = wait(cluster.client(), sid, stage.out_dir / layout.JOB_LOG)
                    if gate:
                        gate.close()
            except BaseException as err:  # the pipeline stopped under the stage (Ray did not start, Ctrl-C, SIGTERM)
                _write_manifest(stage, status="failed", started=started, ended=time.time(), exit_code=None,
                                error=f"the pipeline stopped while the stage ran: {type(err).__name__}: {err}"[:500])
                raise
            ended = time.time()
            status = "finished" if result.ok else "failed"
            _write_manifest(stage, status=status, started=started, ended=ended, exit_code=result.exit_code,
                            job=result.submission_id, node=result.node)
            if result.ok:
                on = f" on node {result.node}" if result.node and not embedded else ""
                print(f"{head} finished in {ended - started:.0f} s{on} -> {stage.out_dir}", flush=True)
                outcomes.append(StageOutcome(stage.name, "finished", stage.out_dir))
                continue
            why = f" ({result.message})" if result.exit_code is None and result.message else ""
            print(f"{head} FAILED: job {result.status}, exit status {result.exit_code}{why}\n"
                  f"---- last lines of {result.log_path} ----\n{result.log_tail(25)}\n----\n"
                  f"Fix the cause, then resume with:\n  {resume_hint}", flush=True)
            outcomes.append(StageOutcome(stage.name, "failed", stage.out_dir, f"exit status {result.exit_code}"))
            break
    finally:
        for sid, gate in ahead.values():  # a job submitted ahead of a failure exits unrun
            if gate:
                gate.close()
            cluster.client().stop_job(sid)
        if gates_dir:
            import shutil

            shutil.rmtree(gates_dir, ignore_errors=True)
    return outcomes
