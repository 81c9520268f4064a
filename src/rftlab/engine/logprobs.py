"""Log-probabilities of chosen tokens from the model's last hidden states, a chunk of tokens at a time.

The full computation (`model(...).logits`, then log-softmax) holds a vocabulary-wide row of floats for every
token of a packed micro-batch, prompts included, several times over (logits, their float copy, the log-softmax,
their gradients): with a 150k vocabulary and 32k tokens that is tens of gigabytes. Here the output layer runs on
the predicted positions only, a chunk of at most `CHUNK_LOGITS` logits (tokens x vocabulary) at a time, under
activation checkpointing: the forward pass keeps one chunk's logits at a time, and the backward pass recomputes
each chunk's from its hidden states.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

CHUNK_LOGITS = 2**24
"""64 MiB of fp32 logits: 341 tokens of a 49k vocabulary, 110 of a 152k one."""


def chunk_logprobs(
    head: torch.nn.Module,
    hidden_C_H: torch.Tensor,
    targets_C: torch.Tensor,
    temperature: float,
    softcap: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each target under the temperature, the distribution's entropy: no gradient)."""
    logits_C_V = head(hidden_C_H).float()
    if softcap:
        logits_C_V = torch.tanh(logits_C_V / softcap) * softcap
    logits_C_V = logits_C_V / temperature
    log_normaliser_C = torch.logsumexp(logits_C_V, dim=-1)
    logprobs_C = logits_C_V.gather(-1, targets_C.unsqueeze(-1)).squeeze(-1) - log_normaliser_C
    with torch.no_grad():
        entropy_C = log_normaliser_C - (torch.softmax(logits_C_V, dim=-1) * logits_C_V).sum(-1)
    return logprobs_C, entropy_C


def token_logprobs(
    head: torch.nn.Module,
    hidden_N_H: torch.Tensor,
    targets_N: torch.Tensor,
    temperature: float,
    softcap: float | None = None,
    chunk_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: log-probability of its target and the entropy, computed `chunk_tokens` rows at a time (default:
    as many as make `CHUNK_LOGITS` logits)."""
    chunk_tokens = chunk_tokens or max(1, CHUNK_LOGITS // head.weight.shape[0])
    logprobs, entropies = [], []
    for start in range(0, hidden_N_H.shape[0], chunk_tokens):
        args = (head, hidden_N_H[start : start + chunk_tokens], targets_N[start : start + chunk_tokens])
        if torch.is_grad_enabled() and hidden_N_H.requires_grad:
            logprobs_C, entropy_C = checkpoint(
                chunk_logprobs, *args, temperature, softcap, use_reentrant=False
            )
        else:
            logprobs_C, entropy_C = chunk_logprobs(*args, temperature, softcap)
        logprobs.append(logprobs_C)
        entropies.append(entropy_C)
    if not logprobs:
        empty = hidden_N_H.new_zeros(0, dtype=torch.float32)
        return empty, empty
    return torch.cat(logprobs), torch.cat(entropies)
