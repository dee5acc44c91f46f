"""What the launch stages write, by name: ``medsage sft``, ``medsage rl`` and ``medsage pipeline``.

``medsage sft ... output.dir=<out>`` (launch/sft.py)::

    run_001/, run_002/, ...        one folder per run; rerunning resumes the latest, --fresh starts the next
    run_NNN/medsage_manifest.json  command, recipe, attempts, losses; status "finished" marks a loadable model
    run_NNN/llamafactory_sft.yaml  what LLaMA-Factory ran      run_NNN/train.log  its output
    run_NNN/medsage_resume_check.json  after a resume: the trainer's check that it holds the checkpoint's weights

``medsage rl ... output_dir=<out>`` (launch/rl.py)::

    final_model -> checkpoints/global_step_<N>/actor/huggingface   verl.log   verl_config.yaml

``medsage pipeline`` (launch/pipeline/)::

    <store>/<stage>-<key>/stage.json, job.log      one folder per stage
    <run_root>/<name>/.../pipeline.json             the job's stages and their folders
    <run_root>/<name>/report/                       the paper tables over every job of the run
"""

from __future__ import annotations

import re
from pathlib import Path

SFT_MANIFEST = "medsage_manifest.json"
SFT_LF_CONFIG = "llamafactory_sft.yaml"
SFT_TRAIN_LOG = "train.log"
SFT_RESUME_CHECK = "medsage_resume_check.json"
SFT_RUN = re.compile(r"^run_(\d{3,})$")
# The pipeline never passes --fresh, so its SFT stage's model is the stage folder's first run.
SFT_FIRST_RUN = "run_001"
RL_FINAL_MODEL = "final_model"
RL_LOG = "verl.log"
RL_VERL_CONFIG = "verl_config.yaml"
RL_CONFIG = "medsage_rl.yaml"  # the composed medsage rl recipe the run trained with (model.path: where it started)
# verl main_ppo's Hydra run folder (its log and .hydra/), inside the RL output folder, never the cwd.
RL_HYDRA_DIR = "hydra"
PIPELINE = "pipeline.json"
STAGE = "stage.json"
JOB_LOG = "job.log"
REPORT_DIR = "report"


def sft_run_dir(out: Path, number: int) -> Path:
    return out / f"run_{number:03d}"


def sft_model(out: Path) -> Path:
    """The model a pipeline SFT stage trained into ``out``."""
    return out / SFT_FIRST_RUN


def rl_model(out: Path) -> Path:
    """The model ``medsage rl`` links in ``out`` once verl has saved a Hugging Face checkpoint."""
    return out / RL_FINAL_MODEL
