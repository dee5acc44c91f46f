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

import shlex
import sys
from pathlib import Path

from medsage.io import atomic_write_json


def _job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from medsage.launch.pipeline.dag import PipelineError, plan_stages, run_stages
    from medsage.launch.pipeline.ray_jobs import ray_cluster

    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    run_dir = Path(cfg.run_root).resolve() / cfg.name
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
    with ray_cluster(cfg.cluster.ray_address, num_cpus=cfg.ray_num_cpus or (8 if cpu else None),
                     num_gpus=1 if cpu else None) as client:
        outcomes = run_stages(stages, client, resume_hint=resume)
    atomic_write_json(job_dir / "pipeline.json", {
        "name": cfg.name, "overrides": overrides, "label": cfg.label, "order": [o.stage for o in outcomes],
        "stages": {o.stage: {"status": o.status, "out_dir": str(o.out_dir), "detail": o.detail} for o in outcomes},
    })
    if any(o.status == "failed" for o in outcomes):
        raise SystemExit(1)
    report_dir = run_dir / "report"
    written = render_report(run_dir, report_dir)
    print(f"pipeline {cfg.name}: done; report in {report_dir}" if written else
          f"pipeline {cfg.name}: done (no evaluation stage, so no report)", flush=True)


def eval_dirs(run_dir: Path) -> list[Path]:
    """The evaluation folders of every job under ``run_dir`` (one run, or a sweep's jobs)."""
    import json

    found = []
    for manifest in sorted(run_dir.rglob("pipeline.json")):
        stages = json.loads(manifest.read_text())["stages"]
        found += [Path(s["out_dir"]) for name, s in stages.items() if name.startswith("eval")]
    return list(dict.fromkeys(found))


def render_report(run_dir: Path, out: Path) -> dict:
    dirs = [d for d in eval_dirs(run_dir) if (d / "run.json").exists()]
    if not dirs:
        return {}
    from medsage.eval.report.tables import write_report

    written = write_report(dirs, out)
    for name, path in written.items():
        print(f"  {name:<20} {path}")
    return written


def main(argv: list[str] | None = None) -> int:
    import hydra

    from medsage.recipes import recipes_dir, register_resolvers

    register_resolvers()
    argv = list(sys.argv[1:] if argv is None else argv)
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
    return 0
