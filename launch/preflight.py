"""Before a GPU stage launches: does its Python environment have what its recipe needs? And which attention.

    report = preflight.run(preflight.rl_needs(cfg.cluster, attention=..., rollout="vllm"), cfg.cluster.envs.rl,
                           cfg.cluster.envs)
    if not report.ok:
        print(report.render())      # every problem with the command or setting that fixes it

One job per part:

- ``probe(python, ...)`` runs a script in the stage's interpreter (a subprocess: the environment may hold
  neither medsage nor its dependencies, so the script is standard library plus what it probes) and returns
  ``Facts``: package versions, whether torch sees CUDA and how many devices, the CUDA its wheels were built
  for, the NVIDIA driver (nvidia-smi) and whether flash_attn imports.
- ``Needs`` says what a stage's recipe asks of that environment (``rl_needs``, ``sft_needs``, ``eval_needs``,
  ``data_needs``), each need with the recipe setting behind it.
- ``check(needs, facts)`` is a pure function of the two: a list of ``Problem``s. Tests feed it facts of
  machines this one is not (an old driver, fewer GPUs).

A ``Report`` gathers the facts and problems of any number of stages and hosts: a check across nodes adds
its own problems with ``Report.add`` and renders them the same way.

``resolve_attention`` turns ``model.attn_implementation: auto`` (recipes/model/) into ``flash_attention_2``
where flash_attn imports in the stage's environment and ``sdpa`` elsewhere; flash-attn has no wheels on
PyPI (source builds only) and no medsage extra installs it, so defaulting to it fails every fresh install.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

AUTO, FLASH_ATTENTION_2, SDPA, EAGER = "auto", "flash_attention_2", "sdpa", "eager"

# NVIDIA's "CUDA Compatibility" guide (CUDA Toolkit documentation), minor-version compatibility: a Linux
# driver at least this new runs every build for that CUDA major release (a few features, PTX JIT of newer
# code, need the release's own driver). torch 2.11 and vLLM 0.24 wheels from PyPI are CUDA 13 builds.
MIN_DRIVER = {13: "580.65.06", 12: "525.60.13", 11: "450.80.02"}

# What env check lists per stage besides its pins: the GPU engines, present or not.
GPU_PACKAGES = {"sft": ["deepspeed", "flash_attn"], "rl": ["vllm", "flash_attn"], "eval": ["vllm", "flash_attn"]}


# --------------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------------
def resolve_attention(requested: str, *, flash_attn: bool) -> str:
    """``auto``: flash_attention_2 where flash_attn imports, else sdpa; an explicit value as it is."""
    if requested != AUTO:
        return requested
    return FLASH_ATTENTION_2 if flash_attn else SDPA


def stage_attention(requested: str, env: str | None, *, on_gpu: bool) -> str:
    """``requested`` resolved for the stage environment ``env`` (``cluster.envs.<stage>``; None: this interpreter).

    flash-attn's kernels are CUDA-only: on CPU ``auto`` is sdpa without a probe, and flash_attention_2 is
    refused. ``uv:`` environments are built by Ray when the job starts, so nothing here can look inside:
    ``auto`` is sdpa there (it runs everywhere). Raises ``ValueError`` with the reason.
    """
    if not on_gpu:
        if requested == FLASH_ATTENTION_2:
            raise ValueError("model.attn_implementation=flash_attention_2 needs CUDA (flash-attn has no CPU kernels) "
                             "and the cluster recipe is cpu: use auto, sdpa or eager")
        return resolve_attention(requested, flash_attn=False)
    if requested != AUTO or (env or "").startswith("uv:"):
        return resolve_attention(requested, flash_attn=False)
    from medsage.runtime import stage_python

    try:
        facts = probe(stage_python(env), ["flash_attn"], imports=["flash_attn"])
    except (FileNotFoundError, RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        raise ValueError(f"model.attn_implementation=auto: cannot look into the stage environment ({err}); "
                         "name one explicitly (sdpa, eager, flash_attention_2)") from None
    return resolve_attention(requested, flash_attn=facts.imports_ok("flash_attn"))


def flash_attn_imports() -> bool:
    """Whether flash_attn imports in this interpreter (for a stage that runs its model in-process: eval's hf)."""
    try:
        import flash_attn  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build (torch ABI mismatch) raises more than ImportError
        return False
    return True


# --------------------------------------------------------------------------------------------
# facts: the probe
# --------------------------------------------------------------------------------------------
@dataclass
class Facts:
    """What ``probe`` found in one interpreter's environment."""

    python: str
    python_version: str = ""
    host: str = ""
    packages: dict[str, str | None] = field(default_factory=dict)  # distribution -> version; None: absent
    imports: dict[str, str | None] = field(default_factory=dict)   # module -> None if it imported, else the error
    gpu_probed: bool = False            # torch and the driver were asked (a GPU stage)
    torch_error: str | None = None      # `import torch` failed (or torch is absent)
    torch_cuda: str | None = None       # torch.version.cuda: the CUDA its wheels are built for; None: a CPU build
    cuda_available: bool = False        # torch.cuda.is_available()
    devices: int = 0                    # torch.cuda.device_count()
    torch_warnings: list[str] = field(default_factory=list)  # what torch said while looking (an old driver)
    visible_devices: str | None = None  # $CUDA_VISIBLE_DEVICES as the stage sees it
    driver: str | None = None           # NVIDIA driver version (nvidia-smi); None: no answer
    driver_error: str | None = None     # why there is none

    def imports_ok(self, module: str) -> bool:
        return module in self.imports and self.imports[module] is None


# Standard library only, plus what it probes. torch exposes no public driver version (torch.version.cuda is
# the build's, not the driver's), so the driver comes from nvidia-smi.
_PROBE = r"""
import json, os, shutil, socket, subprocess, sys, warnings
from importlib.metadata import PackageNotFoundError, version
args = json.loads(sys.argv[1])
out = {"python": sys.executable, "python_version": sys.version.split()[0], "host": socket.gethostname(),
       "packages": {}, "imports": {}}
for name in args["packages"]:
    try:
        out["packages"][name] = version(name)
    except PackageNotFoundError:
        out["packages"][name] = None
if args["gpu"]:
    out.update(gpu_probed=True, visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch
            out["torch_cuda"] = torch.version.cuda
            out["cuda_available"] = bool(torch.cuda.is_available())
            out["devices"] = torch.cuda.device_count() if out["cuda_available"] else 0
        out["torch_warnings"] = [" ".join(str(w.message).split())[:400] for w in caught
                                 if "cuda" in str(w.message).lower() or "driver" in str(w.message).lower()][:3]
    except Exception as err:
        out["torch_error"] = f"{type(err).__name__}: {err}"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        out["driver_error"] = "nvidia-smi not found"
    else:
        try:
            proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                  text=True, timeout=60)
            found = proc.stdout.split()
            if proc.returncode == 0 and found:
                out["driver"] = found[0]
            else:
                out["driver_error"] = " ".join((proc.stderr or proc.stdout).split())[-300:] or f"exit {proc.returncode}"
        except (OSError, subprocess.TimeoutExpired) as err:
            out["driver_error"] = str(err)
for module in args["imports"]:
    try:
        __import__(module)
        out["imports"][module] = None
    except Exception as err:
        out["imports"][module] = " ".join(f"{type(err).__name__}: {err}".split())[:400]
print(json.dumps(out))
"""


def probe(python: str, packages: Iterable[str], *, gpu: bool = False, imports: Iterable[str] = (),
          timeout: float = 300) -> Facts:
    """``Facts`` of ``python``'s environment: ``packages``' versions, the GPU facts if ``gpu`` (imports torch:
    seconds), whether each of ``imports`` imports. Run from "/" so no checkout (its medsage.egg-info, a
    folder named like a package) stands in for an install. Raises ``RuntimeError`` naming the interpreter."""
    request = {"packages": list(dict.fromkeys(packages)), "gpu": gpu, "imports": list(imports)}
    proc = subprocess.run([python, "-c", _PROBE, json.dumps(request)], capture_output=True, text=True,
                          timeout=timeout, cwd="/", check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"could not run {python}: {proc.stderr.strip()[-500:]}")
    return Facts(**json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------------
# needs: what a recipe asks of its stage's environment
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pin:
    name: str
    spec: str = ""   # a version specifier; "": any version
    why: str = ""    # said when it does not hold


@dataclass
class Needs:
    """What one stage's recipe asks of the environment it runs in; each need says which setting asks."""

    stage: str
    gpus: int = 0                      # CUDA devices torch must see on each node; 0: a CPU stage (no GPU probe)
    gpus_why: str = ""
    gpus_key: str = "cluster.gpus_per_node"  # the setting that asks for them
    pins: list[Pin] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)  # distribution -> why it is needed
    flash_attn: str = ""               # why flash_attn must import; "": it need not
    listed: list[str] = field(default_factory=list)         # reported, not required

    def probe_names(self) -> list[str]:
        return [*(p.name for p in self.pins), *self.packages, *self.listed, *(["flash_attn"] if self.flash_attn else [])]


def _stage_pins(stage: str) -> list[Pin]:
    from medsage.launch.env import REQUIREMENTS

    return [Pin(name, spec) for name, spec in REQUIREMENTS[stage].items()]


def _gpus(cluster: Any) -> tuple[int, str]:
    if cluster.accelerator != "gpu":
        return 0, ""
    gpus = int(cluster.gpus_per_node)
    return gpus, f"cluster {cluster.name} asks for {gpus} GPU(s) per node (cluster.gpus_per_node={gpus})"


def rl_needs(cluster: Any, *, attention: str, rollout: str = "vllm", remove_padding: bool = False) -> Needs:
    """verl on ``cluster``: ``attention`` is the actor's and reference model's (verl's override_config), ``rollout``
    verl's rollout engine; on a GPU recipe medsage always rolls out with vLLM (plugins/engines/verl.py)."""
    from medsage.launch.env import MULTI_RANK_RL

    gpus, why = _gpus(cluster)
    needs = Needs("rl", gpus, why, pins=_stage_pins("rl"), listed=list(GPU_PACKAGES["rl"]))
    ranks = int(cluster.nnodes) * max(1, int(cluster.gpus_per_node))
    if ranks > 1:
        needs.pins += [Pin(name, spec, f"verl's init_model fails on more than one rank ({ranks} here) before {name}{spec}; "
                                       "the RL environment must not be the SFT one (llamafactory 0.9.5 pins accelerate<=1.11)")
                       for name, spec in MULTI_RANK_RL.items()]
    if gpus and rollout == "vllm":
        needs.packages["vllm"] = "verl's rollout runs on vLLM (actor_rollout_ref.rollout.name=vllm)"
    if gpus and attention == FLASH_ATTENTION_2:
        needs.flash_attn = ("verl's actor and reference model run flash_attention_2 "
                            "(actor_rollout_ref.model.override_config.attn_implementation)")
    elif gpus and remove_padding:
        needs.flash_attn = "verl's remove-padding runs flash-attn's varlen kernels (actor_rollout_ref.model.use_remove_padding=true)"
    return needs


def sft_needs(cluster: Any, *, deepspeed: str | None, flash_attn: str = "") -> Needs:
    """LLaMA-Factory on ``cluster``: ``deepspeed`` the config it trains with (None: none); ``flash_attn`` why
    flash-attn must import ("": it need not)."""
    gpus, why = _gpus(cluster)
    needs = Needs("sft", gpus, why, pins=_stage_pins("sft"), listed=list(GPU_PACKAGES["sft"]))
    if gpus and deepspeed:
        needs.packages["deepspeed"] = f"the SFT recipe trains with DeepSpeed (sft.deepspeed: {deepspeed})"
    if gpus:
        needs.flash_attn = flash_attn
    return needs


def eval_needs(cluster: Any, backend: Mapping[str, Any], *, attention: str) -> Needs:
    """``medsage eval run`` with ``backend`` (the recipe's eval.backend): hf and vllm generate on this node's GPUs
    (hf on one, vLLM on tensor_parallel_size), other backends call out and need none."""
    needs = Needs("eval", pins=_stage_pins("eval"), listed=list(GPU_PACKAGES["eval"]))
    name = str(backend.get("name"))
    if cluster.accelerator != "gpu":
        return needs
    if name == "vllm":
        if backend.get("tensor_parallel_size"):
            needs.gpus, needs.gpus_key = int(backend["tensor_parallel_size"]), "eval.backend.tensor_parallel_size"
        else:  # null: the backend splits the model over as many of the node's GPUs as its attention heads allow
            needs.gpus, needs.gpus_key = int(backend.get("node_gpus") or 1), "cluster.gpus_per_node"
        needs.gpus_why = f"the vllm eval backend asks for {needs.gpus} GPU(s) ({needs.gpus_key})"
        needs.packages["vllm"] = "the eval backend is vllm (eval/backend=vllm)"
    elif name == "hf" and str(backend.get("device", AUTO)) != "cpu":
        needs.gpus, needs.gpus_why = 1, f"the hf eval backend generates on a GPU on cluster {cluster.name}"
        if attention == FLASH_ATTENTION_2:
            needs.flash_attn = "the hf eval backend loads the model with flash_attention_2 (model.attn_implementation)"
    return needs


def data_needs() -> Needs:
    return Needs("data", pins=_stage_pins("data"))


def recipe_needs(stage: str, cfg: Any) -> Needs:
    """``stage``'s needs under the recipes composed in ``cfg`` (``medsage env check``'s recipes/env.yaml: cluster,
    model, sft, eval/backend): the same checks ``medsage rl|sft|eval run`` make before they launch."""
    attention = str(cfg.model.attn_implementation)
    if stage == "rl":
        return rl_needs(cfg.cluster, attention=attention)
    if stage == "sft":
        why = "LLaMA-Factory trains with flash_attn=fa2 (model.attn_implementation)" if attention == FLASH_ATTENTION_2 else ""
        return sft_needs(cfg.cluster, deepspeed=cfg.sft.get("deepspeed"), flash_attn=why)
    if stage == "eval":
        return eval_needs(cfg.cluster, cfg.eval.backend, attention=attention)
    return data_needs()


# --------------------------------------------------------------------------------------------
# the check: needs x facts -> problems
# --------------------------------------------------------------------------------------------
@dataclass
class Problem:
    """Something that stops a stage, with the fix that works."""

    stage: str
    what: str
    fix: str
    where: str = ""  # the interpreter (and host) it was found with


def setup_command(stage: str, envs: Mapping[str, str | None] | None = None) -> str:
    """How to (re)build ``stage``'s environment from medsage's committed locks.

    Into the stage's own folder when it has one that no other stage shares; otherwise into a new folder the
    recipe then names: a fix must never install one stage's engines into another's environment
    (LLaMA-Factory, verl and vLLM pin conflicting torch/transformers versions)."""
    from pathlib import PurePath

    from medsage.launch.env_setup import DEFAULT_PREFIX

    envs = dict(envs or {})
    env = envs.get(stage)
    own = env and not env.startswith("uv:") and not any(e == env for s, e in envs.items() if s != stage)
    if own and PurePath(env).name == stage:  # `env setup` builds <prefix>/<stage>: this very folder
        return f"medsage env setup --stage {stage} --prefix {PurePath(env).parent}"
    return (f"medsage env setup --stage {stage} --prefix {DEFAULT_PREFIX}, then set "
            f"cluster.envs.{stage}={DEFAULT_PREFIX}/{stage} (or add --cluster <name> to write it into the recipe)")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def driver_minimum(torch_cuda: str | None) -> str | None:
    """The oldest driver that runs a build for CUDA ``torch_cuda`` ("13.0"); None: unknown release."""
    if not torch_cuda:
        return None
    return MIN_DRIVER.get(_version(torch_cuda)[0] if _version(torch_cuda) else -1)


def check(needs: Needs, facts: Facts, envs: Mapping[str, str | None] | None = None) -> list[Problem]:
    """The problems of an environment with ``facts`` for a stage with ``needs``: a pure function."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    setup = setup_command(needs.stage, envs)
    where = f"{facts.python} on {facts.host}" if facts.host else facts.python
    problems: list[Problem] = []

    def problem(what: str, fix: str = setup) -> None:
        problems.append(Problem(needs.stage, what, fix, where))

    for pin in needs.pins:
        found = facts.packages.get(pin.name)
        if found is None:
            problem(f"{pin.name} is not installed")
            continue
        try:
            held = not pin.spec or Version(found.split("+")[0]) in SpecifierSet(pin.spec)
        except InvalidVersion:
            held = False
        if not held:
            problem(f"{pin.name} {found} does not satisfy {pin.spec}" + (f": {pin.why}" if pin.why else ""))
    for name, why in needs.packages.items():
        if facts.packages.get(name) is None:
            problem(f"{name} is not installed, and {why}")
    if needs.flash_attn and not facts.imports_ok("flash_attn"):
        reason = facts.imports.get("flash_attn") or "not probed"
        if facts.packages.get("flash_attn") is None:
            reason = "not installed"
        problem(f"{needs.flash_attn}, but flash_attn does not import ({reason})",
                "set model.attn_implementation=auto (flash-attn where it imports, else sdpa), or build flash-attn "
                f"against this environment's torch: {facts.python} -m pip install flash-attn --no-build-isolation")
    if needs.gpus:
        problems += [Problem(needs.stage, what, fix, where) for what, fix in _gpu_problems(needs, facts, setup)]
    return problems


def _gpu_problems(needs: Needs, facts: Facts, setup: str) -> list[tuple[str, str]]:
    """(what, fix) for the GPU facts: torch's CUDA build, the driver it needs, the devices it sees."""
    host = facts.host or "this machine"
    if not facts.gpu_probed:
        return [("the GPU facts were not probed", "probe with gpu=True (a stage with GPU needs)")]
    if facts.torch_error:
        return [(f"torch does not import ({facts.torch_error}), and {needs.gpus_why}", setup)]
    torch_version = facts.packages.get("torch") or "?"
    if facts.torch_cuda is None:
        return [(f"torch {torch_version} is a CPU-only build, and {needs.gpus_why}", setup)]
    out: list[tuple[str, str]] = []
    minimum = driver_minimum(facts.torch_cuda)
    old_driver = bool(facts.driver and minimum and _version(facts.driver) < _version(minimum))
    if old_driver:
        major = facts.torch_cuda.split(".")[0]
        what = (f"NVIDIA driver {facts.driver} on {host} is older than {minimum}, the oldest that runs CUDA {major}.x "
                f"builds (torch {torch_version} is built for CUDA {facts.torch_cuda})")
        fix = (f"upgrade the NVIDIA driver on {host} to >= {minimum} (NVIDIA's CUDA Compatibility guide), or build "
               "the environment with torch wheels for the CUDA release its driver supports")
        out.append((what, fix))
    visible = ("CUDA_VISIBLE_DEVICES unset" if facts.visible_devices is None
               else f"CUDA_VISIBLE_DEVICES={facts.visible_devices!r}")
    said = f"; torch said: {' | '.join(facts.torch_warnings)}" if facts.torch_warnings else ""
    if not facts.cuda_available and not old_driver:
        if facts.driver is None:
            what = (f"no CUDA device is visible to torch on {host} and no NVIDIA driver answers ({facts.driver_error}), "
                    f"and {needs.gpus_why}{said}")
            out.append((what, "run this stage on a GPU node (cluster=local_cpu runs the tiny recipes on CPU)"))
        else:
            what = (f"torch sees no CUDA device on {host} ({visible}) although NVIDIA driver {facts.driver} answers, "
                    f"and {needs.gpus_why}{said}")
            out.append((what, "give the job its GPUs: check CUDA_VISIBLE_DEVICES, and a container's GPU access (--gpus all)"))
    elif facts.cuda_available and facts.devices < needs.gpus:
        what = f"torch sees {facts.devices} CUDA device(s) on {host} ({visible}), and {needs.gpus_why}"
        fix = f"run on a node with {needs.gpus} GPUs visible, or ask for fewer: {needs.gpus_key}={facts.devices}"
        out.append((what, fix))
    return out


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------
@dataclass
class Report:
    """Facts and problems of one or more stage environments, on one or more hosts."""

    facts: dict[str, Facts] = field(default_factory=dict)  # "<stage>" or "<stage>@<host>"
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, *problems: Problem) -> Report:
        self.problems.extend(problems)
        return self

    def of(self, stage: str) -> list[Problem]:
        return [p for p in self.problems if p.stage == stage]

    def render(self, indent: str = "  ") -> str:
        lines = []
        for p in self.problems:
            lines.append(f"{indent}problem: {p.stage}: {p.what}" + (f" [{p.where}]" if p.where else ""))
            lines.append(f"{indent}fix:     {p.fix}")
        return "\n".join(lines)


def run(needs: Needs, env: str | None, envs: Mapping[str, str | None] | None = None) -> Report:
    """Probe the stage environment ``env`` (``cluster.envs.<stage>``; None: this interpreter) and check it."""
    from medsage.runtime import stage_python

    report = Report()
    setup = setup_command(needs.stage, envs)
    if (env or "").startswith("uv:"):
        return report  # built by Ray when the job starts: nothing here to look into yet
    try:
        python = stage_python(env)
    except FileNotFoundError as err:
        return report.add(Problem(needs.stage, str(err), setup, str(env)))
    try:
        facts = probe(python, needs.probe_names(), gpu=needs.gpus > 0,
                      imports=["flash_attn"] if "flash_attn" in needs.probe_names() else [])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
        return report.add(Problem(needs.stage, f"the interpreter failed: {err}", setup, python))
    report.facts[needs.stage] = facts
    return report.add(*check(needs, facts, envs))
