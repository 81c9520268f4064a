"""GRPO-family algorithm pieces as pure functions: group advantages and per-token policy losses.

Shapes: N = completion tokens of a micro-batch (flattened across its sequences), S = sequences.
The losses return per-token values; the trainer sums them and divides by the optimizer step's token count
(token-level mean).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ADVANTAGE_EPS = 1e-4


@dataclass(frozen=True)
class LossSpec:
    method: str
    clip_low: float
    clip_high: float
    kl_beta: float


CLIP_RANGES = {"grpo": (0.2, 0.2), "dapo": (0.2, 0.28), "gspo-token": (3e-4, 4e-4)}


def loss_spec(method: str, kl_beta: float) -> LossSpec:
    clip_low, clip_high = CLIP_RANGES[method]
    return LossSpec(method, clip_low, clip_high, kl_beta if method == "grpo" else 0.0)


def group_advantages(rewards: list[list[float | None]]) -> tuple[list[list[float | None]], int]:
    """Per-rollout advantage (reward - group mean) / (group std + eps), and the number of dropped groups.

    Invalid rollouts (None) are left out of their group; a group with fewer than two valid rollouts or with all
    valid rewards equal carries no signal and is dropped (every advantage None).
    """
    advantages: list[list[float | None]] = []
    dropped = 0
    for group in rewards:
        valid = torch.tensor([reward for reward in group if reward is not None], dtype=torch.float64)
        if len(valid) < 2 or bool((valid == valid[0]).all()):
            advantages.append([None] * len(group))
            dropped += 1
            continue
        mean, std = valid.mean(), valid.std()
        advantages.append(
            [None if reward is None else float((reward - mean) / (std + ADVANTAGE_EPS)) for reward in group]
        )
    return advantages, dropped


def clipped_surrogate_N(
    ratio_N: torch.Tensor, advantages_N: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic surrogate per token, and where the clip is active (the gradient is cut there)."""
    unclipped_N = ratio_N * advantages_N
    clipped_N = ratio_N.clamp(1 - clip_low, 1 + clip_high) * advantages_N
    is_clipped_N = clipped_N < unclipped_N
    return -torch.minimum(unclipped_N, clipped_N), is_clipped_N


def token_ratio_N(logprobs_N: torch.Tensor, old_logprobs_N: torch.Tensor) -> torch.Tensor:
    return torch.exp(logprobs_N - old_logprobs_N)


def gspo_token_ratio_N(
    logprobs_N: torch.Tensor, old_logprobs_N: torch.Tensor, sequence_ids_N: torch.Tensor, sequence_count: int
) -> torch.Tensor:
    """GSPO-token: every token carries its sequence's ratio exp(mean log-ratio) as value, with the gradient of
    its own log-probability: sg[s_i] * pi(y_t) / sg[pi(y_t)]."""
    log_ratio_N = logprobs_N - old_logprobs_N
    zeros_S = log_ratio_N.new_zeros(sequence_count)
    sums_S = zeros_S.index_add(0, sequence_ids_N, log_ratio_N.detach())
    counts_S = zeros_S.index_add(0, sequence_ids_N, torch.ones_like(log_ratio_N))
    sequence_log_ratio_N = (sums_S / counts_S.clamp(min=1))[sequence_ids_N]
    return torch.exp(sequence_log_ratio_N + logprobs_N - logprobs_N.detach())


def kl_k3_N(logprobs_N: torch.Tensor, ref_logprobs_N: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || reference), per token: exp(d) - d - 1 with d = ref - policy."""
    delta_N = ref_logprobs_N - logprobs_N
    return torch.exp(delta_N) - delta_N - 1


def policy_loss_N(
    spec: LossSpec,
    logprobs_N: torch.Tensor,
    old_logprobs_N: torch.Tensor,
    advantages_N: torch.Tensor,
    sequence_ids_N: torch.Tensor,
    sequence_count: int,
    ref_logprobs_N: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token loss, per-token KL to the reference (zeros without one), per-token clip flags)."""
    if spec.method == "gspo-token":
        ratio_N = gspo_token_ratio_N(logprobs_N, old_logprobs_N, sequence_ids_N, sequence_count)
    else:
        ratio_N = token_ratio_N(logprobs_N, old_logprobs_N)
    loss_N, is_clipped_N = clipped_surrogate_N(ratio_N, advantages_N, spec.clip_low, spec.clip_high)
    kl_N = torch.zeros_like(loss_N)
    if ref_logprobs_N is not None:
        kl_N = kl_k3_N(logprobs_N, ref_logprobs_N)
        loss_N = loss_N + spec.kl_beta * kl_N
    return loss_N, kl_N, is_clipped_N
