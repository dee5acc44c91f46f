"""verl's agent-loop manager for medsage's runs: it tells the self-check loop when a pass is validation.

verl 0.9.1 marks a validation batch in its ``meta_info`` (``validate: True``, set by the trainer's
``_validate``) and gives an agent loop's ``run`` only the batch's per-row columns and the sampling
parameters, so a loop cannot tell validation from training. Without that, every validation pass
(``trainer.test_freq``) would retry each wrong first answer with the answer key as trigger, and its
scores would be those of an oracle. The worker below copies the flag into a per-row column
(``VALIDATE_KEY``) before verl's own ``generate_sequences`` runs the loops; the loop then answers once,
as at deployment (evaluation never retries either). The oracle-triggered retry's own numbers are the
training step's self-correction metrics (``advantage.self_check_metrics``: Acc@t1, Acc@t2, Δ(i→c), Δ(c→i)).

Selected through verl's own setting ``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` (``medsage rl``
writes it); the manager's ``agent_loop_workers_class`` is the attribute verl's manager reads for its worker class.
Building the manager also installs medsage's trainer hooks (``verl_plugin.install_trainer_hooks``): a run
that does not select it keeps verl's trainer as it is.
"""

from __future__ import annotations

import numpy as np
import ray
from verl.experimental.agent_loop import AgentLoopManager, AgentLoopWorker

from medsage.plugins.self_check.advantage import VALIDATE_KEY
from medsage.plugins.self_check.verl_plugin import install_trainer_hooks


def mark_validation(batch) -> None:
    """Give every row of a validation batch ``VALIDATE_KEY = True`` (a training batch is left as it is)."""
    if batch.meta_info.get("validate", False):
        batch.non_tensor_batch[VALIDATE_KEY] = np.full(len(batch), True, dtype=object)


class SelfCheckAgentLoopWorker(AgentLoopWorker):
    async def generate_sequences(self, batch):
        mark_validation(batch)
        return await super().generate_sequences(batch)


class SelfCheckAgentLoopManager(AgentLoopManager):
    agent_loop_workers_class = ray.remote(SelfCheckAgentLoopWorker)

    def __init__(self, *args, **kwargs):
        # verl builds the manager in its trainer's process before training: the one place a run has
        # selected medsage, so the trainer hooks are installed here and in no other run
        install_trainer_hooks()
        super().__init__(*args, **kwargs)
