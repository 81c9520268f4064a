"""`run_job`: one RFT job, from rows and an evaluator to a trained LoRA adapter.

For each epoch, the training rows are shuffled (seeded) and cut into chunks of `chunk_size` rows. Each chunk is
one rollout round, read top to bottom in `run_job`: sample K rollouts per row, score them with the evaluator
(while sampling goes on), turn the scores into group-relative advantages, pack the rollouts into micro-batches
and update the adapter. A checkpoint follows every chunk. The eval reward (mean score over the eval rows, at the
job's temperature and/or greedy, as `eval_passes` says) is measured before training and after each epoch.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from rftlab.engine.adapter import attach_adapter, save_adapter
from rftlab.engine.algo import group_advantages
from rftlab.engine.api import JobFailed, JobInputs, JobOutcome, Reporter
from rftlab.engine.checkpoint import restore_checkpoint, save_checkpoint
from rftlab.engine.data import Row, check_rows, chunk_rows, epoch_chunks, split_rows
from rftlab.engine.evaluator import EvaluatorPool
from rftlab.engine.models import choose_placement, load_base
from rftlab.engine.packing import TrainSequence, build_microbatch, pack_sequences, truncate
from rftlab.engine.rollout import Rollout, Sampler, render_prompt
from rftlab.engine.rollout_workers import rollout_sampler
from rftlab.engine.settings import EVALUATOR_TIMEOUT_S, JobSettings, SamplingParams
from rftlab.engine.tool_rollout import ToolRollouts
from rftlab.engine.trainer import StepStats, Trainer
from rftlab.engine.vllm_sampler import choose_sampler
from rftlab.fireworks.contract import CANCELLED, COMPLETED, EARLY_STOPPED, WARNING_PREFIX

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

    def add_round(self, epoch: int, shared: dict[str, Any], updates: list[StepStats]) -> list[dict[str, Any]]:
        """The metrics of each step one rollout round fed, numbered on from the last step. A round whose groups
        all had equal rewards updates nothing; it still counts as a step (loss 0, groups_dropped_frac 1), so the
        reward series covers every rollout round."""
        steps = [{**shared, **step_metrics(update)} for update in updates or [StepStats.none()]]
        for metrics in steps:
            self.step += 1
            metrics.update(step=self.step, epoch=epoch)
        self.usable_groups_in_epoch += shared["usable_groups"]
        self.output_tokens += shared["tokens_generated"]
        self.history.extend(steps)
        self.last_chunk_steps = len(steps)
        return steps

    def end_chunk(self, epoch: int, chunk: int, chunks: int, evals: dict[str, float] | None) -> None:
        """Move past `chunk`; past the epoch too when it was its last (with the epoch's eval reward, if any)."""
        self.chunk = chunk + 1
        if self.chunk < chunks:
            return
        if evals is not None:
            self.evals.append(evals)
            self.history[-1].update(evals)
        self.stopped_early = self.usable_groups_in_epoch == 0
        self.epoch, self.chunk, self.usable_groups_in_epoch = epoch + 1, 0, 0


@dataclass
class Timing:
    sample_seconds: float = 0.0
    score_wait_seconds: float = 0.0
    """Waiting for scores once sampling had ended (scoring overlaps sampling)."""
    update_seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "gen_seconds": self.sample_seconds,
            "eval_seconds": self.score_wait_seconds,
            "update_seconds": self.update_seconds,
            "step_seconds": self.sample_seconds + self.score_wait_seconds + self.update_seconds,
        }


class Prompts:
    """Each row's chat-templated prompt, tokenized once per job."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._ids: dict[int, list[int]] = {}

    def ids(self, row: Row) -> list[int]:
        if id(row) not in self._ids:
            self._ids[id(row)] = render_prompt(self.tokenizer, row)
        return self._ids[id(row)]


def sample(
    sampler: Sampler,
    prompts: Prompts,
    rows: list[Row],
    candidates: int,
    params: SamplingParams,
    tools: ToolRollouts | None = None,
) -> Iterator[list[Rollout]]:
    """`candidates` rollouts per row, batch by batch as the sampler finishes them (multi-turn tool rollouts,
    all at once, when the job has `tools`)."""
    if tools is not None:
        yield tools.run(sampler, rows, candidates, params)
        return
    prompt_ids = [prompts.ids(row) for row in rows for _ in range(candidates)]
    for batch in sampler.generate(prompt_ids, params):
        yield [
            Rollout.single_turn(c, rows[c.prompt_index // candidates], *divmod(c.prompt_index, candidates))
            for c in batch
        ]


def score(
    pool: EvaluatorPool, batches: Iterator[list[Rollout]], rows: list[Row]
) -> tuple[list[Rollout], Timing]:
    """Every rollout of `batches` scored; each batch goes to the evaluator as soon as it is sampled."""
    started = time.perf_counter()
    rollouts, futures = [], []
    for batch in batches:
        for rollout in batch:
            row = rows[rollout.row_index]
            fields = {key: value for key, value in row.items() if key not in ("messages", "ground_truth")}
            if rollout.tools is not None:
                fields["tools"] = rollout.tools
            rollouts.append(rollout)
            futures.append(pool.submit(rollout.messages, row.get("ground_truth"), fields))
    sampled = time.perf_counter()
    for rollout, future in zip(rollouts, futures, strict=True):
        rollout.score = future.result()
    return rollouts, Timing(sampled - started, time.perf_counter() - sampled)


def check_invalid_share(rollouts: list[Rollout], what: str) -> int:
    invalid = [rollout.score for rollout in rollouts if not rollout.score.valid]
    if len(invalid) * 2 > len(rollouts):
        raise JobFailed(
            f"the evaluator failed on most rollouts of the {what} ({len(invalid)} of {len(rollouts)}): "
            f"{invalid[0].error}"
        )
    return len(invalid)


def assign_advantages(rollouts: list[Rollout], candidates: int) -> int:
    """Set each rollout's group-relative advantage; the number of groups dropped for carrying no signal."""
    groups = [rollouts[start : start + candidates] for start in range(0, len(rollouts), candidates)]
    advantages, dropped = group_advantages([[r.score.value for r in group] for group in groups])
    for group, group_advantage in zip(groups, advantages, strict=True):
        for rollout, advantage in zip(group, group_advantage, strict=True):
            rollout.advantage = advantage
    return dropped


def training_sequences(rollouts: list[Rollout], max_tokens: int) -> tuple[list[TrainSequence], int]:
    """What the update trains on (rollouts with an advantage, cut to `max_tokens`), and how many were cut."""
    sequences, truncated = [], 0
    for rollout in rollouts:
        if rollout.advantage is None:
            continue
        sequence = TrainSequence(
            rollout.prompt_ids + rollout.completion_ids,
            len(rollout.prompt_ids),
            rollout.logprobs,
            rollout.advantage,
            tuple(rollout.trained_mask),
        )
        cut, was_cut = truncate(sequence, max_tokens)
        truncated += was_cut
        if cut is not None:
            sequences.append(cut)
    return sequences, truncated


def round_metrics(
    rollouts: list[Rollout], sequences: list[TrainSequence], dropped: int, truncated: int, timing: Timing
) -> dict[str, Any]:
    """The metrics every step of one rollout round shares."""
    rewards = torch.tensor([r.score.value for r in rollouts if r.score.valid])
    groups = len({r.row_index for r in rollouts})
    return {
        "reward_mean": float(rewards.mean()) if len(rewards) else 0.0,
        "reward_std": float(rewards.std()) if len(rewards) > 1 else 0.0,
        "groups_dropped_frac": dropped / groups,
        "usable_groups": groups - dropped,
        "invalid_rollouts": sum(not r.score.valid for r in rollouts),
        "tokens_generated": sum(len(r.completion_ids) for r in rollouts),
        "tokens_trained": sum(len(s.tokens) for s in sequences),
        "truncated_sequences": truncated,
        **reply_metrics(rollouts),
        **tool_metrics(rollouts),
        **timing.metrics(),
    }


def tool_metrics(rollouts: list[Rollout], prefix: str = "") -> dict[str, float]:
    """Per round: turns and tool calls per rollout, tool errors, rollouts ended by the turn cap or the context
    length, tool results cut, seconds spent in tools; nothing when the rollouts used no tools."""
    used = [r.tool_use for r in rollouts if r.tool_use]
    if not used:
        return {}
    calls = sum(u["tool_calls"] for u in used)
    errors = sum(u["tool_errors"] for u in used)
    metrics = {
        "turns_per_rollout": sum(r.turns for r in rollouts) / len(rollouts),
        "tool_calls_per_rollout": calls / len(used),
        "tool_errors": errors,
        "tool_error_rate": errors / calls if calls else 0.0,
        "turn_capped_rollouts": sum(u["turn_capped"] for u in used),
        "context_truncated_rollouts": sum(u["context_truncated"] for u in used),
        "tool_results_truncated": sum(u["tool_results_truncated"] for u in used),
        "tool_seconds": sum(u["tool_seconds"] for u in used),
    }
    return {prefix + key: value for key, value in metrics.items()}


def reply_metrics(rollouts: list[Rollout], prefix: str = "") -> dict[str, float]:
    """The share of replies cut off at max output tokens, and the mean reply length in tokens."""
    return {
        f"{prefix}truncated_replies_frac": sum(r.finish_reason == "length" for r in rollouts) / len(rollouts),
        f"{prefix}reply_tokens_mean": sum(len(r.completion_ids) for r in rollouts) / len(rollouts),
    }


def step_metrics(stats: StepStats) -> dict[str, float]:
    return {key: value for key, value in asdict(stats).items() if key != "tokens"}


def eval_pass(
    sampler: Sampler,
    prompts: Prompts,
    pool: EvaluatorPool,
    rows: list[Row],
    params: SamplingParams,
    seed: int,
    tools: ToolRollouts | None = None,
) -> tuple[float, list[Rollout]]:
    """Mean valid score, one rollout per row; its sampling noise comes from a fixed seed, apart from the training
    RNG, so every measurement of a job draws the same way."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rollouts, _ = score(pool, sample(sampler, prompts, rows, 1, params, tools), rows)
    check_invalid_share(rollouts, "eval rows")
    valid = [r.score.value for r in rollouts if r.score.valid]
    return sum(valid) / len(valid), rollouts


def measure_evals(
    sampler: Sampler,
    prompts: Prompts,
    pool: EvaluatorPool,
    rows: list[Row],
    settings: JobSettings,
    seed: int,
    tools: ToolRollouts | None = None,
) -> tuple[dict[str, float], list[Rollout]]:
    """The eval reward of each pass `settings.eval_passes` names (eval_reward: sampled at the job's temperature;
    eval_reward_greedy), and the rollouts of the first pass."""
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    kept: list[Rollout] = []
    for name in settings.eval_passes:
        params = settings.sampling if name == "sampled" else settings.sampling.as_greedy()
        key = "eval_reward" if name == "sampled" else "eval_reward_greedy"
        metrics[key], rollouts = eval_pass(
            sampler, prompts, pool, rows, params, seed + EVAL_SEED_OFFSET, tools
        )
        kept = kept or rollouts
    metrics.update(reply_metrics(kept, "eval_"))
    metrics.update(tool_metrics(kept, "eval_"))
    return {**metrics, "eval_reward_seconds": time.perf_counter() - started}, kept


def final_metrics(progress: Progress) -> dict[str, float]:
    metrics: dict[str, float] = {"steps": progress.step}
    if progress.history:
        metrics["reward_first"] = progress.history[0]["reward_mean"]
        metrics["reward_last"] = progress.history[-1]["reward_mean"]
    if progress.evals:
        before, after = progress.evals[0], progress.evals[-1]
        for key in ("eval_reward", "eval_reward_greedy"):
            if key in before:
                metrics[f"{key}_before"], metrics[f"{key}_after"] = before[key], after[key]
    if progress.history:
        replies = [m.get("truncated_replies_frac", 0.0) for m in progress.history]
        metrics["truncated_replies_frac"] = sum(replies) / len(replies)
    generated = sum(m["tokens_generated"] for m in progress.history)
    gen_seconds = sum(m["gen_seconds"] for m in progress.history)
    if gen_seconds:
        metrics["generation_tokens_per_second"] = generated / gen_seconds
    return metrics


def report_round(
    reporter: Reporter,
    progress: Progress,
    steps: list[dict[str, Any]],
    rollouts: list[Rollout],
    eval_rollouts: list[Rollout],
    candidates: int,
    done_chunks: int,
    total_chunks: int,
) -> None:
    first_step = steps[0]["step"]
    reporter.rollouts("train", first_step, [r.record(group=i // candidates) for i, r in enumerate(rollouts)])
    if eval_rollouts:
        reporter.rollouts("eval", progress.step, [r.record(group=i) for i, r in enumerate(eval_rollouts)])
    for metrics in steps:
        reporter.step(metrics)
    percent = 100.0 * done_chunks / total_chunks
    reporter.progress(percent, progress.epoch, progress.step, total_chunks, progress.output_tokens)


def run_job(inputs: JobInputs, reporter: Reporter) -> JobOutcome:
    settings, K = inputs.settings, inputs.settings.candidates
    train_rows, eval_rows = job_rows(inputs)
    torch.manual_seed(inputs.seed)
    loaded = load_base(inputs.base_model, choose_placement())
    print(loaded.notice, file=sys.stderr, flush=True)  # the job's log
    tokenizer = loaded.tokenizer
    model = attach_adapter(loaded.model, settings.training.lora_rank, inputs.warm_start_adapter)
    chunks_per_epoch = math.ceil(len(train_rows) / chunk_rows(len(train_rows), settings.chunk_size))
    total_chunks = settings.training.epochs * chunks_per_epoch
    trainer = Trainer(model, settings.training, settings.sampling.temperature, total_chunks)
    progress = resume(inputs, model, trainer, reporter)
    max_tokens = min(settings.training.max_context_length, settings.training.batch_tokens)
    tool_rollouts = (
        ToolRollouts(tokenizer, settings.tools, settings.training.max_context_length)
        if settings.tools
        else nullcontext()
    )
    with (
        EvaluatorPool(inputs.evaluator, settings.evaluator_concurrency, EVALUATOR_TIMEOUT_S) as pool,
        tool_rollouts as tools,
    ):
        sampler = job_sampler(model, tokenizer, inputs)
        prompts = Prompts(tokenizer)

        def evaluate() -> tuple[dict[str, float], list[Rollout]]:
            return measure_evals(sampler, prompts, pool, eval_rows, settings, inputs.seed, tools)

        if eval_rows and not progress.evals:
            evals, eval_rollouts = evaluate()
            progress.evals.append(evals)
            reporter.rollouts("eval", 0, [r.record(group=i) for i, r in enumerate(eval_rollouts)])
        for epoch in range(progress.epoch, settings.training.epochs):
            if progress.stopped_early:
                break
            chunks = epoch_chunks(len(train_rows), settings.chunk_size, inputs.seed, epoch)
            for chunk in range(progress.chunk, len(chunks)):
                if reporter.should_stop():
                    return JobOutcome(CANCELLED, "cancelled", final_metrics(progress))
                rows = [train_rows[i] for i in chunks[chunk]]
                rollouts, timing = score(
                    pool, sample(sampler, prompts, rows, K, settings.sampling, tools), rows
                )
                check_invalid_share(rollouts, "chunk")
                dropped = assign_advantages(rollouts, K)
                sequences, truncated = training_sequences(rollouts, max_tokens)
                updates = update(trainer, sequences, settings, tokenizer.pad_token_id, timing)
                steps = progress.add_round(
                    epoch, round_metrics(rollouts, sequences, dropped, truncated, timing), updates
                )
                evals, eval_rollouts = evaluate() if eval_rows and chunk + 1 == len(chunks) else (None, [])
                progress.end_chunk(epoch, chunk, len(chunks), evals)
                done_chunks = progress.epoch * chunks_per_epoch + progress.chunk
                save_checkpoint(inputs.checkpoint_dir, done_chunks, model, trainer, progress.__dict__)
                report_round(reporter, progress, steps, rollouts, eval_rollouts, K, done_chunks, total_chunks)
                warning = cut_off_warning(rollouts, settings.sampling.max_output_tokens, progress.step)
                if warning:
                    reporter.note(warning)
    save_adapter(model, inputs.output_dir)
    return outcome(progress, loaded.notice if loaded.source.kind == "gguf" else "")


def job_sampler(model: Any, tokenizer: PreTrainedTokenizerBase, inputs: JobInputs) -> Sampler:
    """Rollout workers when the job asks for several, else vLLM on a GPU, else Hugging Face `generate`."""
    training = inputs.settings.training
    return rollout_sampler(model, tokenizer, inputs.base_model) or choose_sampler(
        model, tokenizer, inputs.base_model, training.lora_rank, training.max_context_length
    )


def update(
    trainer: Trainer, sequences: list[TrainSequence], settings: JobSettings, pad_id: int, timing: Timing
) -> list[StepStats]:
    """Pack the sequences into micro-batches within the token budget and take the optimizer step(s)."""
    started = time.perf_counter()
    share = not trainer.attends_per_sequence  # groups share one copy of their prompt unless laid out alone
    batches = pack_sequences(sequences, settings.training.batch_tokens, share)
    updates = trainer.train([build_microbatch(sequences, b, pad_id, share) for b in batches])
    timing.update_seconds = time.perf_counter() - started
    return updates


def job_rows(inputs: JobInputs) -> tuple[list[Row], list[Row]]:
    """(rows to train on, rows to measure the eval reward on: possibly none)."""
    check_rows(inputs.train_rows, "training dataset")
    if inputs.eval_rows:
        check_rows(inputs.eval_rows, "evaluation dataset")
    return split_rows(inputs.train_rows, inputs.eval_rows, inputs.settings.eval_auto_carveout, inputs.seed)


CUT_OFF_FIX = "raise sampling.max_output_tokens (inferenceParameters.maxOutputTokens)"


def cut_off_warning(rollouts: list[Rollout], max_output_tokens: int, step: int) -> str:
    """A warning when more than half of the replies of the round that ended at `step` were cut off at the
    limit, else ""."""
    cut = sum(r.finish_reason == "length" for r in rollouts)
    if cut * 2 <= len(rollouts):
        return ""
    return (
        f"{WARNING_PREFIX}{cut} of {len(rollouts)} replies in the round ending at step {step} hit maxOutputTokens "
        f"({max_output_tokens}) and were cut off; {CUT_OFF_FIX}"
    )


def outcome(progress: Progress, notice: str = "") -> JobOutcome:
    """The job's end state; its message adds the notice and a warning when most replies were cut off."""
    metrics = final_metrics(progress)
    notes = [notice] if notice else []
    if metrics.get("truncated_replies_frac", 0.0) > 0.5:
        notes.append(
            f"{WARNING_PREFIX}{metrics['truncated_replies_frac']:.0%} of the replies hit maxOutputTokens and were "
            f"cut off; {CUT_OFF_FIX}"
        )
    if progress.stopped_early:
        notes.insert(
            0, f"epoch {progress.epoch} had no group with different rewards: nothing left to learn from"
        )
        return JobOutcome(EARLY_STOPPED, "; ".join(notes), metrics)
    return JobOutcome(COMPLETED, "; ".join(notes), metrics)


def resume(inputs: JobInputs, model: Any, trainer: Trainer, reporter: Reporter) -> Progress:
    """The progress of the last checkpoint (loaded into model and trainer), or a fresh start. The steps of the
    last chunk are reported again: the worker that died may have saved the checkpoint before reporting them."""
    restored = restore_checkpoint(inputs.checkpoint_dir, model, trainer)
    if not restored:
        return Progress()
    progress = Progress(**restored)
    for metrics in progress.history[len(progress.history) - progress.last_chunk_steps :]:
        reporter.step(metrics)
    return progress
