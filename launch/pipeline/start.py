"""What ``medsage pipeline`` checks and holds before Hydra writes anything (a Hydra callback, recipes/pipeline.yaml).

Hydra writes a job's ``.hydra/*.yaml`` (the whole composed config and the command line) before it calls the
job, so a check that only the job made would come after a key given inline was on disk and after a
missing ``???`` value had left a job folder behind. ``on_run_start`` / ``on_multirun_start`` run before
that, on the composed config; each stops the run with one line (``SystemExit``: Hydra reports any other
error of a callback as a warning and goes on):

- a key written inline (``+synthesis.api_key=...``, ``synthesis_overrides=["+client.api_key=..."]``) is
  refused, naming it but never its value (keys come from the environment: ``medsage.secrets``);
- a ``???`` value the stages read is named (``eval_data_root``), with the way to set it (a sweep's jobs: each
  job, in ``app._job``, once Hydra has composed it);
- ``run_root`` (and ``store``, where it lies outside it) is locked for the whole run (``medsage.lock``): a
  second pipeline on it stops at once, naming the holder, instead of running a stage into the folder the
  first is writing.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

_MISSING = re.compile(r"Missing mandatory value: ?([\w.\[\]]+)")


def inline_key_problem(config: DictConfig) -> str | None:
    """The keys written inline in the composed recipe or on the command line (a sweep's values included)."""
    from medsage.secrets import inline_keys

    given = [k for o in config.hydra.overrides.task for k in inline_keys(str(o))]  # on the command line
    task = {k: v for k, v in OmegaConf.to_container(config, resolve=False).items() if k != "hydra"}
    found = given + [k for k in inline_keys(task) if k.rpartition(": ")[2] not in given]  # or in a recipe file
    if not found:
        return None
    env = OmegaConf.select(config, "synthesis.api_key_env", default=None) or "OPENAI_API_KEY"
    return (f"{', '.join(dict.fromkeys(found))}: an API key may not be written in a recipe or an override (it would "
            f"reach pipeline.json, .hydra, the stage logs and the console); export it as ${env} (the variable "
            f"synthesis.api_key_env names) and run again. Nothing was written.")


def missing_value_problem(config: DictConfig) -> str | None:
    """The first ``???`` value the pipeline reads (its stage commands, cluster and folders), or None."""
    from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

    for key in ("run_root", "name", "store", "ray_num_cpus", "cluster", "stages", "model_dirs", "evaluate", "label"):
        try:
            value = OmegaConf.select(config, key, throw_on_missing=True)
            if OmegaConf.is_config(value):
                OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        except (MissingMandatoryValue, InterpolationToMissingValueError) as err:
            found = _MISSING.search(str(err))
            name = found[1] if found else key
            return (f"{name} is not set (it is ??? in the recipe, and {key} needs it): set it on the "
                    f"command line, e.g. {name}=... (recipes/pipeline.yaml says what it is)")
    return None


# The locks of this process's run: held from the run's start until ``medsage pipeline`` returns (``release``),
# however it ends (a job that stops with SystemExit never reaches Hydra's on_run_end).
_HELD = ExitStack()


def release() -> None:
    _HELD.close()


class PipelineStart(Callback):
    """The checks and the run_root lock above, at the run's start (a sweep's: once, for all its jobs)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if problem := missing_value_problem(config):
            raise SystemExit(f"medsage pipeline: {problem}. Nothing was written.")
        self._start(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A sweep's jobs get values this config lacks (paper_table3's sweeper sets row_data through a group):
        # each job checks its own ??? values (app._job), after Hydra has written the job's .hydra folder.
        self._start(config)

    def _start(self, config: DictConfig) -> None:
        from medsage.lock import FolderLocked, folder_lock

        if problem := inline_key_problem(config):
            raise SystemExit(f"medsage pipeline: {problem}")
        run_root = Path(config.run_root).resolve()
        store = Path(config.store).resolve()
        folders = [run_root] + ([] if store.is_relative_to(run_root) else [store])
        try:
            for folder in folders:
                _HELD.enter_context(folder_lock(folder, "pipeline"))
        except FolderLocked as err:
            _HELD.close()
            raise SystemExit(f"medsage pipeline: {err}") from None
        except OSError as err:  # run_root under a file, read-only, full: one line, as every verb says it
            from medsage.launch.cli import describe_os_error

            _HELD.close()
            raise SystemExit(f"medsage pipeline: {describe_os_error(err)}") from None
