"""The policy update: a LoRA adapter (PEFT) trained with AdamW on packed micro-batches.

The trainer knows nothing about rollouts or rewards: it takes micro-batches carrying tokens, old log-probs and
advantages, and takes one optimizer step per `gradient_accumulation_steps` of them, normalising the loss by the
step's token count (token-level mean).
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

import torch
from peft import PeftModel

from rftlab.engine.algo import loss_spec, policy_loss_N
from rftlab.engine.logprobs import token_logprobs
from rftlab.engine.packing import MicroBatch
from rftlab.engine.settings import TrainingSettings

MAX_GRAD_NORM = 1.0
CHECKPOINTED_FROM_PARAMETERS = 20_000_000
"""Base models this large train with activation checkpointing; the bundled tiny model, whose activations are
small, without."""
FINAL_LR_FACTOR = 0.1


def lr_factor(step: int, warmup_steps: int, planned_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then cosine decay to FINAL_LR_FACTOR at `planned_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, planned_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class StepStats:
    loss: float
    kl: float
    clip_fraction: float
    entropy: float
    grad_norm: float
    learning_rate: float
    tokens: int
    peak_memory_mb: float = 0.0
    """On a GPU, the most memory torch held during the step; on CPU, the process's peak resident memory so far."""

    @classmethod
    def none(cls) -> StepStats:
        """The stats of a round that updated nothing."""
        return cls(
            loss=0.0,
            kl=0.0,
            clip_fraction=0.0,
            entropy=0.0,
            grad_norm=0.0,
            learning_rate=0.0,
            tokens=0,
            peak_memory_mb=peak_memory_mb(),
        )


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def checkpoint_activations(model: torch.nn.Module) -> None:
    """Activation checkpointing without reentrant autograd, under the name the installed transformers has:
    `gradient_checkpointing_enable` is a deprecated alias from transformers 5 on (a FutureWarning in every job log)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class Trainer:
    def __init__(self, model: PeftModel, settings: TrainingSettings, temperature: float, planned_steps: int):
        self.model, self.settings, self.temperature = model, settings, temperature
        if model.get_base_model().num_parameters() >= CHECKPOINTED_FROM_PARAMETERS:
            # each decoder layer keeps its input only and recomputes the rest in the backward pass: a third more
            # update compute for a fraction of the activations (a 135M model's update fell from 3.6 to 2.1 GB)
            checkpoint_activations(model.get_base_model())
        self.attends_per_sequence = model.config._attn_implementation.startswith("flash_attention")
        """Micro-batches lay out every sequence alone for a variable-length attention kernel (the micro-batch
        then needs no L x L mask), else groups share their prompt under a mask."""
        self.spec = loss_spec(settings.loss_method, settings.kl_beta)
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, settings.warmup_steps, planned_steps)
        )

    def train(self, microbatches: list[MicroBatch]) -> list[StepStats]:
        per_step = self.settings.gradient_accumulation_steps
        return [self.step(microbatches[i : i + per_step]) for i in range(0, len(microbatches), per_step)]

    def step(self, microbatches: list[MicroBatch]) -> StepStats:
        self.model.train()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        total_tokens = sum(batch.token_count for batch in microbatches)
        loss_sum = kl_sum = entropy_sum = 0.0
        clipped = 0
        for batch in microbatches:
            logprobs_N, entropy_N = self._logprobs(batch, with_entropy=True)
            ref_logprobs_N = None
            if self.spec.kl_beta > 0:
                with torch.no_grad(), self.model.disable_adapter():
                    ref_logprobs_N, _ = self._logprobs(batch, with_entropy=False)
            device = logprobs_N.device
            loss_N, kl_N, is_clipped_N = policy_loss_N(
                self.spec,
                logprobs_N,
                batch.old_logprobs_N.to(device),
                batch.advantages_N.to(device),
                batch.sequence_ids_N.to(device),
                batch.sequence_count,
                ref_logprobs_N,
            )
            (loss_N.sum() / total_tokens).backward()
            loss_sum += loss_N.sum().item()
            kl_sum += kl_N.sum().item()
            entropy_sum += entropy_N.sum().item()
            clipped += int(is_clipped_N.sum())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, MAX_GRAD_NORM)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepStats(
            loss=loss_sum / total_tokens,
            kl=kl_sum / total_tokens,
            clip_fraction=clipped / total_tokens,
            entropy=entropy_sum / total_tokens,
            grad_norm=float(grad_norm),
            learning_rate=learning_rate,
            tokens=total_tokens,
            peak_memory_mb=peak_memory_mb(),
        )

    def _logprobs(self, batch: MicroBatch, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-probabilities of the trained tokens under the sampling temperature (and their entropy), without
        the logits of every packed position (logprobs.py)."""
        device, dtype = self.model.device, self.model.dtype
        attention_mask_R_1_L_L = None  # sequences laid out alone: the position ids delimit them
        if batch.attends_R_L_L is not None:
            attends_R_1_L_L = batch.attends_R_L_L.to(device).unsqueeze(1)
            # an additive mask: every attention implementation (eager included) reads it the same way
            attention_mask_R_1_L_L = torch.zeros(
                attends_R_1_L_L.shape, dtype=dtype, device=device
            ).masked_fill(~attends_R_1_L_L, torch.finfo(dtype).min)
        base = self.model.get_base_model()
        hidden_R_L_H = base.get_decoder()(
            input_ids=batch.input_ids_R_L.to(device),
            position_ids=batch.position_ids_R_L.to(device),
            attention_mask=attention_mask_R_1_L_L,
            use_cache=False,
        ).last_hidden_state
        # index_select, not indexing with a tensor: on CPU the backward of the latter (index_put_ with accumulate)
        # adds up in an order that depends on thread scheduling, so a seeded job drifted from one run to the next
        hidden_N_H = hidden_R_L_H.flatten(0, 1).index_select(0, batch.predict_at_N.to(device))
        logprobs_N, entropy_N = token_logprobs(
            base.get_output_embeddings(),
            hidden_N_H,
            batch.targets_N.to(device),
            self.temperature,
            getattr(base.config.get_text_config(), "final_logit_softcapping", None),
        )
        return logprobs_N, entropy_N if with_entropy else None
