"""rftlab's engine against TRL's GRPOTrainer on the same GRPO work, in one invocation.

Both sides train a LoRA adapter on the same model (`--task`: the bundled tiny-arith model on two-digit
addition, or a real model on the short-sums task, as bench/real_model.py runs it) with the same rows, K completions for each of
P prompts per step, the same maximum output tokens, LoRA rank (alpha 2r, all linear layers), learning rate
(cosine to 10% without warmup), weight decay, gradient clipping, loss (DAPO: clip 0.2 / 0.28, no KL,
token-level mean), group-normalised advantages, sampling (`--temperature`, no top-k / top-p), seed and number of
steps. Each side runs in its own process, one after the other, both on torch's default threads (one per core,
as the local backend gives a job when it runs one at a time) unless `--trl-threads` pins TRL's.

rftlab runs through `run_job` exactly as the local backend's worker calls it (subprocess evaluators, packing,
a checkpoint after every step). TRL runs `GRPOTrainer.train()` with the evaluator called in-process as a reward
function. The held-out reward is measured for both by the same code (the engine's own eval: one completion per
held-out row, sampled with a fixed seed at the job's temperature, and greedy), before and after training.

    .venv/bin/python bench/engine_vs_trl.py [--steps 60] [--prompts 8] [--k 8]

Last line: `engine_vs_trl_ratio: X`, rftlab's end-to-end completions per second over TRL's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from _common import (
    BENCH_THREADS,
    TASKS,
    StepLog,
    Task,
    peak_rss_mb,
    pin_threads,
    print_machine,
    run_side,
)

WEIGHT_DECAY = 0.01
MIN_LR_RATE = 0.1
CLIP_LOW, CLIP_HIGH = 0.2, 0.28


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps (= rollout rounds) per side")
    parser.add_argument("--prompts", type=int, default=8, help="prompts (rows) per step")
    parser.add_argument("--k", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=8, help="maximum output tokens per completion")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--task", choices=sorted(TASKS), default="arithmetic", help="rows, evaluator and model"
    )
    parser.add_argument("--model", help="the base model (default: the task's)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument(
        "--eval-rows", type=int, default=400, help="held-out rows for the reward before/after"
    )
    parser.add_argument("--trl-threads", type=int, default=BENCH_THREADS, help="torch threads for TRL's side")
    parser.add_argument("--side", choices=["rftlab", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model or TASKS[args.task].model
    return args


def task(args: argparse.Namespace) -> Task:
    return TASKS[args.task]


def split(args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """(training rows: exactly steps x prompts of them, held-out rows): the task's held-out rows, or else the
    engine's seeded carve-out, topped up with training rows neither side trains on when `--eval-rows` asks for
    more."""
    from rftlab.engine.data import carve_out

    train, held_out = task(args).rows("train.jsonl"), task(args).rows("eval.jsonl")
    if not held_out:
        train, held_out = carve_out(train, args.seed)
    needed = args.steps * args.prompts
    if needed + max(0, args.eval_rows - len(held_out)) > len(train):
        raise SystemExit(
            f"--steps x --prompts = {needed} leaves too few of the {len(train)} rows to hold out"
        )
    unused = train[needed:]
    return train[:needed], (held_out + unused)[: args.eval_rows]


def job_resource(args: argparse.Namespace) -> dict[str, Any]:
    """The Fireworks job fields both sides' settings are read from (the engine's through the local backend's
    defaults: `settings_for`)."""
    return {
        "trainingConfig": {
            "epochs": 1,
            "learningRate": args.lr,
            "loraRank": args.lora_rank,
            "batchSize": 4096,
            "maxContextLength": 512,
            "gradientAccumulationSteps": 1,
            "learningRateWarmupSteps": 0,
            "optimizerWeightDecay": WEIGHT_DECAY,
        },
        "inferenceParameters": {
            "temperature": args.temperature,
            "topP": 1.0,
            "topK": 0,
            "maxOutputTokens": args.max_tokens,
            "responseCandidatesCount": args.k,
        },
        "lossConfig": {"method": "dapo"},
        "chunkSize": args.prompts,
        "evalAutoCarveout": False,
    }


def held_out_reward(model, tokenizer, rows: list[dict], args: argparse.Namespace) -> dict[str, float]:
    """The engine's own eval measurement (sampled with a fixed seed, and greedy) for any PEFT model."""
    from dataclasses import replace

    from rftlab.engine.evaluator import EvaluatorPool
    from rftlab.engine.job import Prompts, measure_evals
    from rftlab.engine.rollout import HFSampler
    from rftlab.engine.settings import EVALUATOR_TIMEOUT_S
    from rftlab.server.job_spec import settings_for

    settings = replace(settings_for(job_resource(args)), eval_passes=("sampled", "greedy"))
    with EvaluatorPool(task(args).evaluator, settings.evaluator_concurrency, EVALUATOR_TIMEOUT_S) as pool:
        sampler = HFSampler(model, tokenizer)
        evals, _ = measure_evals(sampler, Prompts(tokenizer), pool, rows, settings, args.seed)
    return {"sampled": evals["eval_reward"], "greedy": evals["eval_reward_greedy"]}


class StepLogWithChildren(StepLog):
    """Also the peak memory of this process's children (the evaluator workers), sampled at each step."""

    def __init__(self) -> None:
        super().__init__()
        self.children_peak_rss_mb = 0.0

    def step(self, metrics: dict[str, float]) -> None:
        super().step(metrics)
        children = psutil.Process().children(recursive=True)
        self.children_peak_rss_mb = max(
            self.children_peak_rss_mb, sum(child.memory_info().rss for child in children) / 2**20
        )


def run_rftlab(args: argparse.Namespace) -> dict[str, Any]:
    from peft import PeftModel

    from rftlab.engine.adapter import attach_adapter
    from rftlab.engine.api import JobInputs
    from rftlab.engine.job import run_job
    from rftlab.engine.models import choose_placement, load_base_model
    from rftlab.engine.rollout import render_prompt
    from rftlab.server.job_spec import settings_for

    train, held_out = split(args)
    base, tokenizer = load_base_model(args.model, choose_placement())
    before = held_out_reward(attach_adapter(base, args.lora_rank, None), tokenizer, held_out, args)
    with tempfile.TemporaryDirectory(prefix="bench-rftlab-") as folder:
        inputs = JobInputs(
            settings=settings_for(job_resource(args)),
            train_rows=train,
            eval_rows=None,
            evaluator=task(args).evaluator,
            base_model=args.model,
            warm_start_adapter=None,
            checkpoint_dir=Path(folder) / "checkpoints",
            output_dir=Path(folder) / "adapter",
            seed=args.seed,
        )
        log = StepLogWithChildren()
        started = time.perf_counter()
        outcome = run_job(inputs, log)
        wall = time.perf_counter() - started
        rss = peak_rss_mb()
        base, tokenizer = load_base_model(args.model, choose_placement())
        after = held_out_reward(PeftModel.from_pretrained(base, inputs.output_dir), tokenizer, held_out, args)
    steps = log.steps
    prompt_tokens = sum(len(render_prompt(tokenizer, row)) for row in train) * args.k
    rollout_tokens = prompt_tokens + sum(m["tokens_generated"] for m in steps)
    return {
        "state": outcome.state,
        "steps": len(steps),
        "completions": args.steps * args.prompts * args.k,
        "wall_s": wall,
        "setup_s": wall - sum(m["step_seconds"] for m in steps),
        "gen_s": sum(m["gen_seconds"] for m in steps),
        "eval_s": sum(m["eval_seconds"] for m in steps),
        "update_s": sum(m["update_seconds"] for m in steps),
        "completion_tokens": sum(m["tokens_generated"] for m in steps),
        "rollout_tokens": rollout_tokens,
        "trained_tokens": sum(m["tokens_trained"] for m in steps),
        "reward_series": [m["reward_mean"] for m in steps],
        "peak_rss_mb": rss,
        "threads": torch.get_num_threads(),
        "evaluator_workers_rss_mb": log.children_peak_rss_mb,
        "cut_off_replies": mean([m.get("truncated_replies_frac", 0.0) for m in steps]),
        "before": before,
        "after": after,
    }


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rftlab.engine.adapter import attach_adapter
    from rftlab.engine.models import resolve_model_source

    pin_threads(args.trl_threads)
    evaluate = task(args).evaluate_function()  # the same evaluator file, called in-process as TRL users do

    train, held_out = split(args)
    source = resolve_model_source(args.model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    before = held_out_reward(
        attach_adapter(AutoModelForCausalLM.from_pretrained(source), args.lora_rank, None),
        tokenizer,
        held_out,
        args,
    )
    base = AutoModelForCausalLM.from_pretrained(source)

    timings = {"gen_s": 0.0, "eval_s": 0.0, "completion_tokens": 0, "rollout_tokens": 0, "padded_tokens": 0}

    def evaluator_reward(prompts, completions, ground_truth, **_: Any) -> list[float]:
        started = time.perf_counter()
        scores = [
            evaluate([*prompt, *completion], ground_truth=truth)["score"]
            for prompt, completion, truth in zip(prompts, completions, ground_truth, strict=True)
        ]
        timings["eval_s"] += time.perf_counter() - started
        return scores

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench-trl-"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=args.prompts * args.k,
        num_generations=args.k,
        steps_per_generation=1,
        gradient_accumulation_steps=1,
        max_completion_length=args.max_tokens,
        temperature=args.temperature,
        top_p=1.0,
        top_k=0,
        learning_rate=args.lr,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": MIN_LR_RATE},
        warmup_steps=0,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="dapo",
        epsilon=CLIP_LOW,
        epsilon_high=CLIP_HIGH,
        scale_rewards="group",
        max_steps=args.steps,
        seed=args.seed,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        bias="none",
    )
    dataset = Dataset.from_list(
        [{"prompt": row["messages"], "ground_truth": row["ground_truth"]} for row in train]
    )
    started = time.perf_counter()
    trainer = GRPOTrainer(
        model=base,
        reward_funcs=evaluator_reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    generate = trainer._generate

    def timed_generate(prompts):
        generated = time.perf_counter()
        output = generate(prompts)
        timings["gen_s"] += time.perf_counter() - generated
        prompt_ids, completion_ids = output[0], output[1]
        timings["completion_tokens"] += sum(len(ids) for ids in completion_ids)
        timings["rollout_tokens"] += sum(len(ids) for ids in prompt_ids) + sum(
            len(ids) for ids in completion_ids
        )
        widest = max(len(ids) for ids in prompt_ids) + max(len(ids) for ids in completion_ids)
        timings["padded_tokens"] += len(prompt_ids) * widest  # TRL trains on every rollout, padded
        return output

    trainer._generate = timed_generate
    train_started = time.perf_counter()
    trainer.train()
    finished = time.perf_counter()
    rss = peak_rss_mb()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    after = held_out_reward(trainer.model, tokenizer, held_out, args)
    train_s = finished - train_started
    return {
        "state": "completed",
        "steps": trainer.state.global_step,
        "completions": args.steps * args.prompts * args.k,
        "wall_s": finished - started,
        "setup_s": train_started - started,
        "gen_s": timings["gen_s"],
        "eval_s": timings["eval_s"],
        "update_s": train_s - timings["gen_s"] - timings["eval_s"],
        "completion_tokens": timings["completion_tokens"],
        "rollout_tokens": timings["rollout_tokens"],
        "trained_tokens": timings["padded_tokens"],
        "reward_series": rewards,
        "peak_rss_mb": rss,
        "threads": torch.get_num_threads(),
        "evaluator_workers_rss_mb": 0.0,
        "before": before,
        "after": after,
    }


def report(name: str, side: dict[str, Any]) -> None:
    def rate(amount: float, seconds: float) -> str:
        return f"{amount / seconds:,.0f}/s" if seconds > 0 else "n/a"

    gain = side["after"]["sampled"] - side["before"]["sampled"]
    print(
        f"{name:>6}: {side['steps']} steps, {side['completions']} completions in {side['wall_s']:.1f} s "
        f"({side['setup_s']:.1f} s outside the phases: loading, starting, checkpoints; {side['threads']} torch "
        f"thread(s)) = "
        f"{side['completions'] / side['wall_s']:.1f} completions/s; "
        f"peak RSS {side['peak_rss_mb']:.0f} MB"
        + (
            f" (+ {side['evaluator_workers_rss_mb']:.0f} MB in all evaluator worker processes)"
            if side["evaluator_workers_rss_mb"]
            else ""
        )
    )
    print(
        f"        generation {side['gen_s']:.1f} s ({rate(side['completion_tokens'], side['gen_s'])} completion tok), "
        f"evaluation {side['eval_s']:.2f} s ({rate(side['completion_tokens'], side['eval_s'])} completion tok), "
        f"update {side['update_s']:.1f} s ({rate(side['rollout_tokens'], side['update_s'])} rollout tok)"
    )
    print(
        f"        held-out reward sampled {side['before']['sampled']:.3f} -> {side['after']['sampled']:.3f} "
        f"({gain:+.3f}), greedy {side['before']['greedy']:.3f} -> {side['after']['greedy']:.3f} "
        f"({side['after']['greedy'] - side['before']['greedy']:+.3f}); "
        f"train reward first/last 5 steps {mean(side['reward_series'][:5]):.3f} -> "
        f"{mean(side['reward_series'][-5:]):.3f}"
    )


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.side:
        result = run_rftlab(args) if args.side == "rftlab" else run_trl(args)
        args.result.write_text(json.dumps(result))
        return 0
    print_machine()
    passed = [arg for arg in (argv if argv is not None else sys.argv[1:])]
    print(
        f"task: {args.task} on {args.model}, temperature {args.temperature:g}, {args.steps} steps x {args.prompts} prompts x K={args.k}, max {args.max_tokens} "
        f"tokens, LoRA r{args.lora_rank}, lr {args.lr:g}, seed {args.seed}, {args.eval_rows} held-out rows"
    )
    sides = {side: run_side(Path(__file__), side, passed) for side in ("rftlab", "trl")}
    for name, side in sides.items():
        report(name, side)
    ratio = (sides["rftlab"]["completions"] / sides["rftlab"]["wall_s"]) / (
        sides["trl"]["completions"] / sides["trl"]["wall_s"]
    )
    gains = {name: side["after"]["sampled"] - side["before"]["sampled"] for name, side in sides.items()}
    print(f"held-out sampled reward gain: rftlab {gains['rftlab']:+.3f}, trl {gains['trl']:+.3f}")
    print(f"engine_vs_trl_ratio: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
