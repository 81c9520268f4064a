"""How much of this machine's fp32 matmul peak the engine's update phase achieves.

A SmolLM2-135M-shaped Qwen2 model is built from its config (random weights, nothing downloaded) and given the
engine's LoRA adapter (rank 16 on every linear layer). Synthetic rollouts (groups of K completions sharing a
prompt, random tokens, random advantages) go through the engine's own update path: `pack_sequences`,
`build_microbatch`, and `Trainer.train` (forward, loss, backward, gradient clipping, AdamW step). The peak is a
2-thread fp32 matmul (2048 x 2048) timed in the same run.

FLOPs counted are the useful ones: per model cell (a token position the model runs, padding excluded), over the
matmul weights N_matmul = the linear layers' weights + the LM head (tied to the embedding, but a matmul all the
same) + the LoRA matrices:
    forward 2 N_matmul; backward: the activations' gradient 2 N_matmul, the LoRA weights' gradient 2 N_lora
    (the frozen base weights get none)  ->  4 N_matmul + 2 N_lora per cell;
plus attention's score and value products over the (query, key) pairs the mask lets attend (causal, within a
unit), per layer: forward 4 x hidden, backward 8 x hidden per pair. Masked pairs that the kernel still
computes, norms, activations, the softmax over the vocabulary and the optimizer are not counted.

    .venv/bin/python bench/update_efficiency.py [--steps 3]

Last line: `update_mfu: X`, achieved FLOP/s over the measured peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from _common import BENCH_THREADS, pin_threads, print_machine
from rftlab.engine.adapter import attach_adapter
from rftlab.engine.packing import TrainSequence, build_microbatch, pack_sequences
from rftlab.engine.settings import TrainingSettings
from rftlab.engine.trainer import Trainer

SMOLLM2_135M_SHAPE = Qwen2Config(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)
LORA_RANK = 16
PAD_ID = 0  # rollout tokens are drawn from 1..vocab-1, so padding cells are the zeros
PEAK_SIZE = 2048


def matmul_peak_flops(size: int = PEAK_SIZE, repeats: int = 10) -> float:
    """Best observed fp32 FLOP/s of a size x size matmul with this process's threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def rollouts(
    groups: int, k: int, prompt_tokens: int, completion_tokens: int, vocab: int
) -> list[TrainSequence]:
    sequences = []
    for _ in range(groups):
        prompt = torch.randint(1, vocab, (prompt_tokens,)).tolist()
        for _ in range(k):
            completion = torch.randint(1, vocab, (completion_tokens,)).tolist()
            old_logprobs = (-torch.rand(completion_tokens) * 5).tolist()
            sequences.append(
                TrainSequence(prompt + completion, prompt_tokens, old_logprobs, float(torch.randn(1)))
            )
    return sequences


def matmul_parameters(model) -> tuple[int, int]:
    """(weights of every matmul the model runs per cell, of which LoRA's)."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    return linear, lora


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=3, help="measured optimizer steps (after one warm-up step)"
    )
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--completion-tokens", type=int, default=48)
    parser.add_argument(
        "--batch-tokens", type=int, default=2048, help="the job's batchSize (tokens per micro-batch)"
    )
    parser.add_argument("--threads", type=int, default=BENCH_THREADS, help="torch threads (peak and update)")
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    print_machine()
    torch.manual_seed(0)
    peak = matmul_peak_flops()
    print(
        f"fp32 matmul peak ({PEAK_SIZE}x{PEAK_SIZE}, {torch.get_num_threads()} threads): {peak / 1e9:.0f} GFLOP/s"
    )

    model = attach_adapter(AutoModelForCausalLM.from_config(SMOLLM2_135M_SHAPE), LORA_RANK, warm_start=None)
    linear, lora = matmul_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    print(
        f"model: {total / 1e6:.1f} M parameters ({lora / 1e6:.2f} M LoRA), {linear / 1e6:.1f} M matmul weights "
        f"per cell (the linear layers, the LM head and LoRA)"
    )
    settings = TrainingSettings(
        epochs=1,
        learning_rate=1e-5,
        lora_rank=LORA_RANK,
        batch_tokens=args.batch_tokens,
        max_context_length=4096,
        gradient_accumulation_steps=1,
        warmup_steps=0,
        weight_decay=0.01,
        loss_method="dapo",
        kl_beta=0.0,
    )
    trainer = Trainer(model, settings, temperature=1.0, planned_steps=args.steps + 1)
    flops_per_cell = 4 * linear + 2 * lora
    flops_per_pair = 12 * SMOLLM2_135M_SHAPE.hidden_size * SMOLLM2_135M_SHAPE.num_hidden_layers
    seconds, cells, counted = [], [], []
    for step in range(args.steps + 1):
        sequences = rollouts(
            args.groups, args.k, args.prompt_tokens, args.completion_tokens, SMOLLM2_135M_SHAPE.vocab_size
        )
        started = time.perf_counter()
        microbatches = [
            build_microbatch(sequences, rows, PAD_ID) for rows in pack_sequences(sequences, args.batch_tokens)
        ]
        trainer.train(microbatches)
        elapsed = time.perf_counter() - started
        real_cells = sum(int((batch.input_ids_R_L != PAD_ID).sum()) for batch in microbatches)
        padding_cells = sum(int((batch.input_ids_R_L == PAD_ID).sum()) for batch in microbatches)
        pairs = sum(int(batch.attends_R_L_L.sum()) for batch in microbatches) - padding_cells
        flops = flops_per_cell * real_cells + flops_per_pair * pairs
        achieved = flops / elapsed
        print(
            f"step {step}{' (warm-up)' if step == 0 else ''}: {len(microbatches)} micro-batch(es), "
            f"{sum(len(s.tokens) for s in sequences)} rollout tokens in {real_cells} model cells, {elapsed:.2f} s, "
            f"{real_cells / elapsed:.0f} cells/s, {achieved / 1e9:.0f} GFLOP/s"
        )
        if step:
            seconds.append(elapsed)
            cells.append(real_cells)
            counted.append(flops)
    peak = max(peak, matmul_peak_flops())
    achieved = sum(counted) / sum(seconds)
    print(
        f"update: {sum(cells) / sum(seconds):.0f} cells/s, {achieved / 1e9:.0f} GFLOP/s "
        f"(median step {statistics.median(seconds):.2f} s); peak {peak / 1e9:.0f} GFLOP/s (the best of the "
        "measurements before and after the steps)"
    )
    print(f"update_mfu: {achieved / peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
