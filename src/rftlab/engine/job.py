"""`run_job`: one RFT job, from rows and an evaluator to a trained LoRA adapter.

For each epoch, the training rows are shuffled (seeded) and cut into chunks of `chunkSize` rows. Each chunk is
one rollout round: K completions per row, scored by the evaluator while generation goes on, turned into
group-relative advantages, packed and trained on. A checkpoint follows every chunk's update. The eval reward
(mean score over the eval rows, greedy and at the job's temperature) is measured before training and after
each epoch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from rftlab.engine.algo import group_advantages
from rftlab.engine.api import JobFailed, JobInputs, JobOutcome, Reporter
from rftlab.engine.checkpoint import restore_checkpoint, save_checkpoint
from rftlab.engine.data import Row, check_rows, chunk_rows, epoch_chunks, split_rows
from rftlab.engine.evaluator import EvaluatorPool, Score
from rftlab.engine.models import choose_placement, load_base_model
from rftlab.engine.packing import TrainSequence, build_microbatch, pack_sequences, truncate
from rftlab.engine.rollout import Completion, Sampler, render_prompt
from rftlab.engine.settings import EVALUATOR_TIMEOUT_S, JobSettings, SamplingParams, job_settings
from rftlab.engine.trainer import Trainer, attach_adapter
from rftlab.engine.vllm_sampler import choose_sampler

EVAL_SEED_OFFSET = 1_000_003


@dataclass
class Progress:
    """Everything about the job's position that a checkpoint must carry (plain data)."""

    epoch: int = 0
    chunk: int = 0
    step: int = 0
    output_tokens: int = 0
    usable_groups_in_epoch: int = 0
    evals: list[dict[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    last_chunk_steps: int = 0
    stopped_early: bool = False
    """An epoch ended without a single usable group."""


@dataclass
class Rollouts:
    completions: list[Completion]
    scores: list[Score]
    gen_seconds: float
    eval_seconds: float


class Policy:
    """The model, its tokenizer and the evaluator pool: rollouts and eval rewards for any rows."""

    def __init__(self, sampler: Sampler, tokenizer: PreTrainedTokenizerBase, pool: EvaluatorPool):
        self.sampler, self.tokenizer, self.pool = sampler, tokenizer, pool
        self._prompts: dict[int, list[int]] = {}

    def prompt(self, row: Row) -> list[int]:
        key = id(row)
        if key not in self._prompts:
            self._prompts[key] = render_prompt(self.tokenizer, row)
        return self._prompts[key]

    def roll_out(self, rows: list[Row], candidates: int, params: SamplingParams) -> Rollouts:
        """`candidates` completions per row (row i's are at i*K ... i*K+K-1), each scored by the evaluator."""
        prompts = [self.prompt(row) for row in rows for _ in range(candidates)]
        started = time.perf_counter()
        completions, futures = [], []
        for batch in self.sampler.generate(prompts, params):
            for completion in batch:
                row = rows[completion.prompt_index // candidates]
                messages = [*row["messages"], {"role": "assistant", "content": completion.text}]
                fields = {key: value for key, value in row.items() if key not in ("messages", "ground_truth")}
                completions.append(completion)
                futures.append(self.pool.submit(messages, row.get("ground_truth"), fields))
        generated = time.perf_counter()
        scores = [future.result() for future in futures]
        return Rollouts(completions, scores, generated - started, time.perf_counter() - generated)

    def eval_reward(self, rows: list[Row], params: SamplingParams, seed: int) -> float:
        """Mean valid score, one completion per row; sampling noise comes from a fixed seed, apart from the
        training RNG, so every measurement of a job draws the same way."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rollouts = self.roll_out(rows, 1, params)
        check_invalid_share(rollouts.scores, "eval rows")
        valid = [score.value for score in rollouts.scores if score.valid]
        return sum(valid) / len(valid)


def check_invalid_share(scores: list[Score], what: str) -> int:
    invalid = [score for score in scores if not score.valid]
    if len(invalid) * 2 > len(scores):
        raise JobFailed(
            f"the evaluator failed on most rollouts of the {what} ({len(invalid)} of {len(scores)}): {invalid[0].error}"
        )
    return len(invalid)


def measure_evals(policy: Policy, rows: list[Row], settings: JobSettings, seed: int) -> dict[str, float]:
    started = time.perf_counter()
    sampled = policy.eval_reward(rows, settings.sampling, seed + EVAL_SEED_OFFSET)
    greedy = policy.eval_reward(rows, settings.sampling.as_greedy(), seed + EVAL_SEED_OFFSET)
    return {
        "eval_reward": sampled,
        "eval_reward_greedy": greedy,
        "eval_reward_seconds": time.perf_counter() - started,
    }


def training_sequences(
    rollouts: Rollouts, candidates: int, max_tokens: int
) -> tuple[list[TrainSequence], int, int, int]:
    """(sequences to train on, usable groups, dropped groups, truncated sequences)."""
    rewards = [score.value for score in rollouts.scores]
    grouped = [rewards[start : start + candidates] for start in range(0, len(rewards), candidates)]
    advantages, dropped = group_advantages(grouped)
    sequences, truncated = [], 0
    for completion, advantage in zip(
        rollouts.completions, (a for group in advantages for a in group), strict=True
    ):
        if advantage is None:
            continue
        sequence = TrainSequence(
            completion.prompt_ids + completion.completion_ids,
            len(completion.prompt_ids),
            completion.logprobs,
            advantage,
        )
        cut, was_cut = truncate(sequence, max_tokens)
        truncated += was_cut
        if cut is not None:
            sequences.append(cut)
    return sequences, len(grouped) - dropped, dropped, truncated


def run_chunk(
    policy: Policy, trainer: Trainer, rows: list[Row], settings: JobSettings, pad_id: int
) -> list[dict]:
    """One rollout round and the optimizer step(s) it feeds; the metrics of each step (none without signal)."""
    started = time.perf_counter()
    rollouts = policy.roll_out(rows, settings.candidates, settings.sampling)
    invalid = check_invalid_share(rollouts.scores, "chunk")
    max_tokens = min(settings.training.max_context_length, settings.training.batch_tokens)
    sequences, usable, dropped, truncated = training_sequences(rollouts, settings.candidates, max_tokens)
    valid_rewards = torch.tensor([s.value for s in rollouts.scores if s.valid])
    update_started = time.perf_counter()
    batches = pack_sequences(sequences, settings.training.batch_tokens)
    steps = trainer.train([build_microbatch(sequences, rows_, pad_id) for rows_ in batches])
    update_seconds = time.perf_counter() - update_started
    chunk_metrics = {
        "reward_mean": float(valid_rewards.mean()) if len(valid_rewards) else 0.0,
        "reward_std": float(valid_rewards.std()) if len(valid_rewards) > 1 else 0.0,
        "groups_dropped_frac": dropped / (usable + dropped),
        "usable_groups": usable,
        "invalid_rollouts": invalid,
        "tokens_generated": sum(len(c.completion_ids) for c in rollouts.completions),
        "tokens_trained": sum(len(s.tokens) for s in sequences),
        "truncated_sequences": truncated,
        "gen_seconds": rollouts.gen_seconds,
        "eval_seconds": rollouts.eval_seconds,
        "update_seconds": update_seconds,
        "step_seconds": time.perf_counter() - started,
    }
    # A chunk whose groups all had equal rewards updates nothing; it still counts as a step (loss 0,
    # groups_dropped_frac 1), so the reward series covers every rollout round.
    no_update = {
        "loss": 0.0,
        "kl": 0.0,
        "clip_fraction": 0.0,
        "entropy": 0.0,
        "grad_norm": 0.0,
        "learning_rate": 0.0,
    }
    updates = [
        {
            "loss": stats.loss,
            "kl": stats.kl,
            "clip_fraction": stats.clip_fraction,
            "entropy": stats.entropy,
            "grad_norm": stats.grad_norm,
            "learning_rate": stats.learning_rate,
        }
        for stats in steps
    ]
    return [{**chunk_metrics, **update} for update in updates or [no_update]]


def final_metrics(progress: Progress) -> dict[str, float]:
    metrics: dict[str, float] = {"steps": progress.step}
    if progress.history:
        metrics["reward_first"] = progress.history[0]["reward_mean"]
        metrics["reward_last"] = progress.history[-1]["reward_mean"]
    if progress.evals:
        before, after = progress.evals[0], progress.evals[-1]
        metrics["eval_reward_before"] = before["eval_reward"]
        metrics["eval_reward_after"] = after["eval_reward"]
        metrics["eval_reward_greedy_before"] = before["eval_reward_greedy"]
        metrics["eval_reward_greedy_after"] = after["eval_reward_greedy"]
    generated = sum(m["tokens_generated"] for m in progress.history)
    gen_seconds = sum(m["gen_seconds"] for m in progress.history)
    if gen_seconds:
        metrics["generation_tokens_per_second"] = generated / gen_seconds
    return metrics


def run_job(inputs: JobInputs, reporter: Reporter) -> JobOutcome:
    settings = job_settings(inputs.job)
    check_rows(inputs.train_rows, "training dataset")
    if inputs.eval_rows:
        check_rows(inputs.eval_rows, "evaluation dataset")
    train_rows, eval_rows = split_rows(
        inputs.train_rows, inputs.eval_rows, settings.eval_auto_carveout, inputs.seed
    )
    torch.manual_seed(inputs.seed)
    base, tokenizer = load_base_model(inputs.base_model, choose_placement())
    model = attach_adapter(base, settings.training.lora_rank, inputs.warm_start_adapter)
    chunks_per_epoch = math.ceil(len(train_rows) / chunk_rows(len(train_rows), settings.chunk_size))
    total_chunks = settings.training.epochs * chunks_per_epoch
    trainer = Trainer(model, settings.training, settings.sampling.temperature, total_chunks)
    restored = restore_checkpoint(inputs.checkpoint_dir, model, trainer)
    progress = Progress(**restored) if restored else Progress()
    if restored:
        for metrics in progress.history[len(progress.history) - progress.last_chunk_steps :]:
            reporter.step(metrics)

    with EvaluatorPool(inputs.evaluator, settings.evaluator_concurrency, EVALUATOR_TIMEOUT_S) as pool:
        sampler = choose_sampler(
            model,
            tokenizer,
            inputs.base_model,
            settings.training.lora_rank,
            max_model_len=settings.training.max_context_length,
        )
        policy = Policy(sampler, tokenizer, pool)
        if eval_rows and not progress.evals:
            progress.evals.append(measure_evals(policy, eval_rows, settings, inputs.seed))
        while progress.epoch < settings.training.epochs and not progress.stopped_early:
            chunks = epoch_chunks(len(train_rows), settings.chunk_size, inputs.seed, progress.epoch)
            if reporter.should_stop():
                return JobOutcome("JOB_STATE_CANCELLED", "cancelled", final_metrics(progress))
            rows = [train_rows[i] for i in chunks[progress.chunk]]
            steps = run_chunk(policy, trainer, rows, settings, tokenizer.pad_token_id)
            for metrics in steps:
                progress.step += 1
                metrics.update(step=progress.step, epoch=progress.epoch)
            progress.usable_groups_in_epoch += steps[0]["usable_groups"]
            progress.output_tokens += steps[0]["tokens_generated"]
            progress.chunk += 1
            epoch_done = progress.chunk == len(chunks)
            if epoch_done and eval_rows:
                progress.evals.append(measure_evals(policy, eval_rows, settings, inputs.seed))
                steps[-1].update(progress.evals[-1])
            progress.history.extend(steps)
            progress.last_chunk_steps = len(steps)
            if epoch_done:
                progress.stopped_early = progress.usable_groups_in_epoch == 0
                progress.epoch, progress.chunk, progress.usable_groups_in_epoch = progress.epoch + 1, 0, 0
            done_chunks = progress.epoch * chunks_per_epoch + progress.chunk
            save_checkpoint(inputs.checkpoint_dir, done_chunks, model, trainer, progress.__dict__)
            for metrics in steps:
                reporter.step(metrics)
            reporter.progress(
                100.0 * done_chunks / total_chunks,
                progress.epoch,
                progress.step,
                total_chunks,
                progress.output_tokens,
            )
    model.save_pretrained(inputs.output_dir)
    if progress.stopped_early:
        return JobOutcome(
            "JOB_STATE_EARLY_STOPPED",
            f"epoch {progress.epoch} had no group with different rewards: nothing left to learn from",
            final_metrics(progress),
        )
    return JobOutcome("JOB_STATE_COMPLETED", "", final_metrics(progress))
