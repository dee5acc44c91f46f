"""Token credit for the self-check retry (paper §3.3, Eq. 11-12 and the text after them).

Per response token, by the span the agent loop recorded for it (``medsage.plugins.self_check.loop``):

    sample accepted at τ1       τ1 tokens: the group-relative outcome advantage A
    sample retried              τ1 tokens: 0
                                self-check tokens: A_sc = α · r_sc,   r_sc = 1[a1 != y and a2 = y]
                                τ2 tokens: the group-relative outcome advantage A
    any sample                  request / padding tokens: 0 (they are not the policy's)

A is GRPO's: ``verl.trainer.ppo.core_algos.compute_grpo_outcome_advantage`` on the outcome reward
of each rollout (for a retry, the reward of its revised trajectory), grouped by prompt uid.

α is applied here and only here: the agent loop records r_sc, and α is the estimator's setting,
``algorithm.self_check_alpha`` of verl's config (``ALPHA_KEY``; ``medsage rl`` writes it from ``rl.alpha``,
whose one default is ``recipes/rl/rgrpo.yaml``), read from the algorithm config verl hands every estimator.

The estimator is registered in verl's own registry as ``medsage_self_check``
(``algorithm.adv_estimator=medsage_self_check``). verl hands a registered estimator only tensors;
the span ids travel in ``non_tensor_batch``, which ``medsage.plugins.self_check.verl_plugin`` passes in the
way verl already does for its GDPO estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ESTIMATOR_NAME = "medsage_self_check"
ALPHA_KEY = "self_check_alpha"  # verl's algorithm config: α of Eq. 11 (``+algorithm.self_check_alpha=0.2``)

# Span codes of response tokens; the agent loop writes one per response token.
SPAN_NONE, SPAN_TAU1, SPAN_CHECK, SPAN_TAU2 = 0, 1, 2, 3
SPAN_NAMES = {SPAN_NONE: "none", SPAN_TAU1: "tau1", SPAN_CHECK: "check", SPAN_TAU2: "tau2"}

# Keys the agent loop writes into its extra fields (they arrive as non_tensor_batch columns).
SPANS_KEY = "medsage_span_ids"            # list[int], one code per response token
RETRIED_KEY = "medsage_retried"           # bool: a1 was wrong, a check and τ2 followed
SC_REWARD_KEY = "medsage_sc_reward"       # float: r_sc (0 for samples not retried)
FIRST_CORRECT_KEY = "medsage_first_correct"  # bool: a1 = y (the run's accuracy rule)
FINAL_CORRECT_KEY = "medsage_final_correct"  # bool: the final answer (a2 if retried, else a1) = y
VALIDATE_KEY = "medsage_validate"         # row column verl's validation batches get (manager.py): no oracle retry
TAU1_TRUNCATED_KEY = "medsage_tau1_truncated"  # bool: τ1 used its whole budget without ending
TAU2_TRUNCATED_KEY = "medsage_tau2_truncated"  # bool: check + τ2 used its whole budget (retried only)
RETRY_TOKENS_KEY = "medsage_retry_tokens"      # int: tokens the retry generated (check + τ2)
LOOP_SECONDS_KEY = "medsage_loop_seconds"      # float: time in the loop's own code (server and verl helpers excluded)
LOOP_VERL_SECONDS_KEY = "medsage_loop_verl_seconds"  # float: time awaiting verl's agent-loop helpers


def span_tensor(span_ids: Any, shape: tuple[int, int]):
    """Stack per-sample span lists into a (batch, response_length) long tensor, padding with SPAN_NONE."""
    import torch

    out = torch.full(shape, SPAN_NONE, dtype=torch.long)
    for i, spans in enumerate(span_ids):
        spans = list(spans) if spans is not None else []
        if len(spans) > shape[1]:
            raise ValueError(f"sample {i}: {len(spans)} span ids for a response of {shape[1]} tokens")
        out[i, : len(spans)] = torch.as_tensor(spans, dtype=torch.long)
    return out


def route_token_credit(outcome_advantage, spans, retried, sc_reward, alpha: float, response_mask):
    """Eq. 11-12 routing. ``outcome_advantage`` is (batch, length) GRPO advantage (constant per row),
    ``sc_reward`` each sample's r_sc; the check tokens of a retried sample get α · r_sc.

    Returns the per-token advantages; see the module docstring for the rule.
    """
    import torch

    retried = torch.as_tensor(np.asarray(retried, dtype=bool)).unsqueeze(-1)
    r_sc = torch.as_tensor(np.asarray(sc_reward, dtype=np.float32)).unsqueeze(-1).to(outcome_advantage.dtype)
    sc = alpha * r_sc
    outcome_tokens = torch.where(retried, spans == SPAN_TAU2, spans == SPAN_TAU1)
    check_tokens = retried & (spans == SPAN_CHECK)
    adv = torch.where(outcome_tokens, outcome_advantage, torch.zeros_like(outcome_advantage))
    adv = torch.where(check_tokens, sc.expand_as(adv), adv)
    return adv * response_mask


def compute_self_check_advantage(token_level_rewards, response_mask, index: np.ndarray, config=None,
                                 non_tensor_batch: dict | None = None, epsilon: float = 1e-6, **_: Any):
    """verl advantage estimator ``medsage_self_check``: returns ``(advantages, returns)``."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    if non_tensor_batch is None or SPANS_KEY not in non_tensor_batch:
        raise ValueError(
            f"adv_estimator={ESTIMATOR_NAME} needs the span ids the medsage self-check agent loop records "
            f"({SPANS_KEY!r} in non_tensor_batch). Run with actor_rollout_ref.rollout.agent.default_agent_loop="
            "medsage_self_check and make sure verl imported medsage's plugin (entry point group verl.plugins)."
        )
    alpha = None if config is None else config.get(ALPHA_KEY)
    if alpha is None or not float(alpha) >= 0:
        raise ValueError(f"adv_estimator={ESTIMATOR_NAME} needs α of Eq. 11 as algorithm.{ALPHA_KEY} >= 0 in verl's "
                         f"config (got {alpha!r}): medsage rl writes it from rl.alpha; by hand "
                         f"+algorithm.{ALPHA_KEY}=0.2")
    norm = bool(config.get("norm_adv_by_std_in_grpo", True))
    outcome, _ = compute_grpo_outcome_advantage(token_level_rewards, response_mask, index, epsilon=epsilon,
                                                norm_adv_by_std_in_grpo=norm)
    spans = span_tensor(non_tensor_batch[SPANS_KEY], tuple(response_mask.shape))
    adv = route_token_credit(outcome, spans, non_tensor_batch[RETRIED_KEY], non_tensor_batch[SC_REWARD_KEY],
                             float(alpha), response_mask)
    return adv, adv


SPANS_DUMP_KEY = "medsage_spans"  # rollout dump column: [[span name, text, advantage], ...] per rollout


def span_records(batch, tokenizer) -> list[list[list]]:
    """Each rollout's response as contiguous spans ``[name, text, advantage]`` (name: tau1, request,
    check, tau2; the request is the span of context tokens the loop inserted)."""
    responses, mask, adv = batch.batch["responses"], batch.batch["response_mask"], batch.batch["advantages"]
    out = []
    for i, spans in enumerate(batch.non_tensor_batch[SPANS_KEY]):
        spans = list(spans)
        rows: list[list] = []
        start = 0
        for k in range(1, len(spans) + 1):
            if k < len(spans) and spans[k] == spans[start]:
                continue
            name = SPAN_NAMES[spans[start]] if spans[start] != SPAN_NONE else "request"
            ids = responses[i, start:k].tolist()
            trained = mask[i, start:k].bool()
            value = float(adv[i, start:k][trained].mean()) if trained.any() else 0.0
            rows.append([name, tokenizer.decode(ids, skip_special_tokens=True), round(value, 6)])
            start = k
        out.append(rows)
    return out


def self_check_metrics(non_tensor_batch: dict) -> dict[str, float]:
    """Self-check rate (fraction of rollouts retried) and correction rate (retries whose τ2 is right)."""
    if RETRIED_KEY not in non_tensor_batch:
        return {}
    retried = np.asarray(non_tensor_batch[RETRIED_KEY], dtype=bool)
    fixed = np.asarray(non_tensor_batch[SC_REWARD_KEY], dtype=float) > 0
    n_retried = int(retried.sum())
    metrics = {
        "medsage/self_check_rate": float(retried.mean()) if len(retried) else 0.0,
        "medsage/correction_rate": float((fixed & retried).sum() / n_retried) if n_retried else 0.0,
        "medsage/retried": float(n_retried),
    }
    if TAU1_TRUNCATED_KEY in non_tensor_batch:
        tau1 = np.asarray(non_tensor_batch[TAU1_TRUNCATED_KEY], dtype=bool)
        tau2 = np.asarray(non_tensor_batch[TAU2_TRUNCATED_KEY], dtype=bool)
        metrics["medsage/tau1_truncation_rate"] = float(tau1.mean()) if len(tau1) else 0.0
        metrics["medsage/tau2_truncation_rate"] = float((tau2 & retried).sum() / n_retried) if n_retried else 0.0
    if RETRY_TOKENS_KEY in non_tensor_batch:
        tokens = np.asarray(non_tensor_batch[RETRY_TOKENS_KEY], dtype=float)
        metrics["medsage/retry_tokens_per_rollout"] = float(tokens.mean())
        metrics["medsage/retry_tokens_per_retry"] = float(tokens[retried].mean()) if n_retried else 0.0
    if FIRST_CORRECT_KEY in non_tensor_batch:
        first = np.asarray(non_tensor_batch[FIRST_CORRECT_KEY], dtype=bool)
        metrics["medsage/first_try_error_rate"] = float(1 - first.mean()) if len(first) else 0.0
        if FINAL_CORRECT_KEY in non_tensor_batch:
            metrics.update(self_correction_metrics(first, np.asarray(non_tensor_batch[FINAL_CORRECT_KEY], dtype=bool)))
    if LOOP_SECONDS_KEY in non_tensor_batch:
        metrics["medsage/agent_loop_s"] = float(np.asarray(non_tensor_batch[LOOP_SECONDS_KEY], dtype=float).sum())
    if LOOP_VERL_SECONDS_KEY in non_tensor_batch:
        metrics["medsage/agent_loop_verl_s"] = float(np.asarray(non_tensor_batch[LOOP_VERL_SECONDS_KEY], dtype=float).sum())
    return metrics


ORACLE_PREFIX = "medsage/oracle_retry/"  # training rollouts, whose retry is triggered by the answer key


def self_correction_metrics(first: np.ndarray, final: np.ndarray) -> dict[str, float]:
    """Acc@t1, Acc@t2, Δ(i→c) and Δ(c→i) over the rollouts of a training step (fractions of all rollouts).

    The retry there is oracle-triggered (only a wrong a1 is retried), so Δ(c→i) is 0 by construction and
    Acc@t2 is an upper bound on what the policy would reach deciding alone; validation never retries
    (``manager.py``), so these numbers are kept apart from it, under their own prefix.
    """
    if not len(first):
        return {}
    return {f"{ORACLE_PREFIX}acc@t1": float(first.mean()), f"{ORACLE_PREFIX}acc@t2": float(final.mean()),
            f"{ORACLE_PREFIX}delta_i2c": float((~first & final).mean()),
            f"{ORACLE_PREFIX}delta_c2i": float((first & ~final).mean())}


def register() -> None:
    """Put the estimator in verl's registry (idempotent: verl refuses a different function under a taken name)."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, register_adv_est

    if ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not compute_self_check_advantage:
        register_adv_est(ESTIMATOR_NAME)(compute_self_check_advantage)
