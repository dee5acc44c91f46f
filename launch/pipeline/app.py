"""``medsage pipeline``: the whole method as one Hydra application, each stage a Ray job.

    medsage pipeline +experiment=demo                                  # the embedded CPU demo
    medsage pipeline model.path=/models/Qwen2.5-VL-7B-Instruct ...     # recipes/pipeline.yaml
    medsage pipeline +experiment=paper_table4 -m alpha=0,0.15,0.2,0.25 # a Hydra multirun (Table 4)

Top to bottom, per Hydra job: compose recipes/pipeline.yaml -> plan the stages of the selected
``stages`` group (data -> synthesis -> sft -> rl -> eval; launch/pipeline/dag.py) -> run them as Ray jobs on
``cluster.ray_address`` or an embedded loopback cluster -> write ``pipeline.json`` into the job's
folder -> render the report over every job of the run (a sweep's jobs share ``runs/<name>``).
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
from contextlib import ExitStack
from pathlib import Path

from medsage.io import atomic_write_json
from medsage.launch import layout


def _job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from medsage.config import ClusterConfig, ConfigError, typed
    from medsage.launch.pipeline.dag import PipelineError, plan_stages, run_stages
    from medsage.launch.pipeline.ray_jobs import ClusterError, existing_cluster

    from medsage.launch.pipeline.start import missing_value_problem

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    if problem := missing_value_problem(cfg):  # a sweep's job (a single run was checked before Hydra wrote anything)
        raise SystemExit(f"medsage pipeline: {problem}")
    run_dir = Path(cfg.run_root).resolve() / cfg.name
    try:
        cluster = typed(ClusterConfig, cfg.cluster, f"recipes/cluster/{hc.runtime.choices.get('cluster')}.yaml",
                        prefix="cluster.")
    except ConfigError as err:
        raise SystemExit(f"medsage pipeline: {err}") from None
    if cluster.nnodes > 1 and existing_cluster(cluster.ray_address) is None:
        raise SystemExit(f"medsage pipeline: cluster {cluster.name} has {cluster.nnodes} nodes, which only a running "
                         "Ray cluster joins: start one (docs/multinode.md) and set "
                         "cluster.ray_address=ray://head:10001 (or http://head:8265, or RAY_ADDRESS)")
    if problem := ray_cpus_problem(cfg) or synthesis_endpoint_problem(cfg) or evaluated_model_problem(cfg):
        raise SystemExit(f"medsage pipeline: {problem}")
    spec = OmegaConf.to_container(cfg.stages, resolve=True)
    try:
        stages = plan_stages(spec, Path(cfg.store).resolve(), OmegaConf.to_container(cfg.cluster.envs, resolve=True))
    except PipelineError as err:
        raise SystemExit(f"medsage pipeline: {err}") from None
    overrides = list(hc.overrides.task)
    resume = shlex.join(["medsage", "pipeline", *overrides])
    print(f"pipeline {cfg.name}: {len(stages)} stages, job folder {job_dir}", flush=True)
    # On CPU the RL stage's verl joins this cluster: one logical GPU for its rank, and enough logical
    # CPUs for its placement groups (medsage.plugins.engines.verl.ray_overrides)
    cpu = cfg.cluster.accelerator == "cpu"
    connect = functools.partial(_cluster, cfg.cluster.ray_address, cfg.ray_num_cpus or (8 if cpu else None),
                                1 if cpu else None)
    try:
        outcomes = run_stages(stages, connect, resume_hint=resume,
                              nodes=(cluster.nnodes, cluster.gpus_per_node if cluster.accelerator == "gpu" else 0))
    except (PipelineError, ClusterError) as err:
        raise SystemExit(f"medsage pipeline: {err}") from None
    note = _data_note(outcomes)
    atomic_write_json(job_dir / layout.PIPELINE, {
        "name": cfg.name, "overrides": overrides, "label": cfg.label, "order": [o.stage for o in outcomes],
        "stages": {o.stage: {"status": o.status, "out_dir": str(o.out_dir), "detail": o.detail} for o in outcomes},
        "data_note": note,
    })
    if note:
        print(f"pipeline {cfg.name}: SFT data by {note}", flush=True)
    if any(o.status == "failed" for o in outcomes):
        raise SystemExit(1)
    report_dir = run_dir / layout.REPORT_DIR
    written = render_report(run_dir, report_dir)
    print(f"pipeline {cfg.name}: done; report in {report_dir}" if written else
          f"pipeline {cfg.name}: done (no evaluation stage, so no report)", flush=True)


# One Ray cluster per `medsage pipeline` process: started by the first job that has a stage to run (a
# rerun with every stage done starts none; its first stages run while it starts), reused by every later
# job of a sweep, stopped when main returns.
_CLUSTERS: dict = {}
_STACK = ExitStack()


def _cluster(address: str | None, num_cpus: int | None, num_gpus: int | None = None):
    from medsage.launch.pipeline.ray_jobs import ClusterStart

    key = (address, num_cpus, num_gpus)
    if key not in _CLUSTERS:
        _CLUSTERS[key] = ClusterStart(address, num_cpus=num_cpus, num_gpus=num_gpus)
        _STACK.callback(_CLUSTERS[key].close)
    return _CLUSTERS[key]


def ray_cpus_problem(cfg) -> str | None:
    """``ray_num_cpus``: null (the machine's count) or a whole number of logical CPUs within Ray's limit; checked
    before Ray starts (Ray refuses anything else from its start thread, an AssertionError for a string, while the
    first stage already runs)."""
    from ray._private.ray_constants import MAX_RESOURCE_QUANTITY  # private: Ray's bound has no public name

    n = cfg.ray_num_cpus
    if n is None or (type(n) is int and 1 <= n <= MAX_RESOURCE_QUANTITY):
        return None
    return (f"ray_num_cpus={n}: the logical CPUs the embedded Ray cluster offers must be a whole number from 1 to "
            f"{int(MAX_RESOURCE_QUANTITY)} (or null: this machine's {os.cpu_count()})")


def synthesis_endpoint_problem(cfg) -> str | None:
    """Why the synthesis stage cannot run as configured (checked before the first stage), or None.

    The paper's recipes synthesise with an LLM and verify with a VLM (A.3.4-A.3.5); without an endpoint
    they stop here, naming the keys, rather than after hours of data preparation.
    """
    if "synth" not in cfg.stages or not cfg.stages.synth.get("enabled", True):
        return None
    ep = cfg.get("synthesis") or {}
    missing = []
    if cfg.synthesizer == "llm":
        missing += [f"synthesis.{k}" for k in ("base_url", "model") if not ep.get(k)]
    if ep.get("verify", "none") == "llm":
        if not (ep.get("verifier_base_url") or ep.get("base_url")):
            missing.append("synthesis.verifier_base_url (or synthesis.base_url)")
        if not ep.get("verifier_model"):
            missing.append("synthesis.verifier_model")
    if not missing:
        return None
    return (f"the synthesis stage uses synthesizer={cfg.synthesizer} (stage-wise LLM synthesis, GPT-4o in the "
            f"paper) and verify={ep.get('verify')} (a consistency verifier, Qwen2.5-VL-72B in the paper), but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set. Set them on the command line, e.g. "
            f"synthesis.base_url=https://api.openai.com/v1 synthesis.model=gpt-4o "
            f"synthesis.verifier_base_url=http://127.0.0.1:8000/v1 synthesis.verifier_model=Qwen/Qwen2.5-VL-72B-Instruct. "
            f"API keys are read from the environment variables named by synthesis.api_key_env "
            f"(now {ep.get('api_key_env')}) and synthesis.verifier_api_key_env, never from a config or the "
            f"command line. To run offline instead: synthesizer=template synthesis.verify=none "
            f"(offline templates: not the paper's data).")


def evaluated_model_problem(cfg) -> str | None:
    """Why ``evaluate`` cannot name the model evaluation reads (checked before Ray starts), or None.

    ``model_dirs.<evaluate>`` is a folder of a training stage; with that stage disabled (Table 5's SFT
    row leaves RL out) nothing would write it, so the keys to change are named here, both of them.
    """
    from medsage.launch.pipeline.dag import STAGE_REF

    if "eval" not in cfg.stages or not cfg.stages.eval.get("enabled", True):
        return None
    key = cfg.evaluate
    if key not in cfg.model_dirs:
        return f"evaluate={key} is not a key of model_dirs ({', '.join(cfg.model_dirs)})"
    folder = cfg.model_dirs[key]
    for ref in STAGE_REF.findall(folder):
        if ref in cfg.stages and not cfg.stages[ref].get("enabled", True):
            return (f"evaluate={key} reads model_dirs.{key} ({folder}), which stage {ref!r} writes, but that "
                    f"stage is disabled (stages.{ref}.enabled=false): evaluate another model (e.g. evaluate="
                    f"{next((k for k in cfg.model_dirs if k != key), key)}) or enable the stage")
    return None


def _data_note(outcomes) -> str | None:
    """The synthesis stage's own word on its data (``report.json``'s ``data_note``), e.g. offline templates."""
    import json

    from medsage.data_pipeline import layout as data_layout

    for o in outcomes:
        report = Path(o.out_dir) / data_layout.SYNTH_REPORT
        if o.stage.startswith("synth") and report.exists():
            return json.loads(report.read_text()).get("data_note")
    return None


def data_notes(run_dir: Path) -> list[str]:
    """Every job's data note under ``run_dir``, once each."""
    import json

    notes = [json.loads(m.read_text()).get("data_note") for m in sorted(run_dir.rglob(layout.PIPELINE))]
    return list(dict.fromkeys(n for n in notes if n))


def eval_dirs(run_dir: Path) -> list[Path]:
    """The evaluation folders of every job under ``run_dir`` (one run, or a sweep's jobs)."""
    import json

    found = []
    for manifest in sorted(run_dir.rglob(layout.PIPELINE)):
        stages = json.loads(manifest.read_text())["stages"]
        found += [Path(s["out_dir"]) for name, s in stages.items() if name.startswith("eval")]
    return list(dict.fromkeys(found))


def render_report(run_dir: Path, out: Path) -> dict:
    from medsage.eval.layout import RUN

    dirs = [d for d in eval_dirs(run_dir) if (d / RUN).exists()]
    if not dirs:
        return {}
    from medsage.eval.report.tables import write_report

    written = write_report(dirs, out, notes=[f"Training data: {n}." for n in data_notes(run_dir)])
    for name, path in written.items():
        print(f"  {name:<20} {path}")
    return written


def add_arguments(parser) -> None:
    from medsage.launch.cli import add_overrides

    parser.description = ("The whole method as one Hydra application (recipes/pipeline.yaml), each stage a resumable "
                          "Ray job; Hydra's own flags (--cfg job, --info) pass through.")
    parser.epilog = ("examples:\n  medsage pipeline +experiment=demo\n"
                     "  medsage pipeline model.path=/models/Qwen2.5-VL-7B-Instruct eval_data_root=/data/eval\n"
                     "  medsage pipeline +experiment=paper_table4 -m alpha=0,0.15,0.2,0.25")
    parser.add_argument("-m", "--multirun", action="store_true", help="a Hydra multirun: one job per swept value")
    add_overrides(parser, "+experiment=demo alpha=0.2")


def main(argv: list[str] | None = None) -> int:
    import hydra

    from medsage.launch.cli import parse
    from medsage.launch.pipeline import start
    from medsage.recipes import recipes_dir, register_resolvers

    register_resolvers()
    argv = list(sys.argv[1:] if argv is None else argv)
    parse("pipeline", argv, known=True)  # --help; the command line itself is Hydra's, flags and all
    # `medsage pipeline +experiment=x -m alpha=0,0.2` reads naturally; Hydra's parser wants -m first.
    flags = [a for a in argv if a in ("-m", "--multirun")]
    argv = flags + [a for a in argv if a not in flags]
    saved = sys.argv
    sys.argv = ["medsage pipeline", *argv]  # Hydra reads its command line from sys.argv
    try:
        hydra.main(config_path=str(recipes_dir()), config_name="pipeline", version_base="1.3")(_job)()
    except SystemExit as stop:
        if stop.code not in (None, 0):
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
                return 2
            return int(stop.code)
    finally:
        sys.argv = saved
        _STACK.close()  # the embedded cluster, if a job started one
        _CLUSTERS.clear()
        start.release()  # the run_root lock (launch/pipeline/start.py), after the cluster has stopped
    return 0
