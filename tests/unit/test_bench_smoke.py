"""The benchmark scripts' building blocks: both sides of the TRL comparison get the same work, the update
benchmark's FLOP count covers every matmul weight, the slow evaluator scores exactly like exact_match and the
evaluator benchmark counts the pool's worker processes. No timings are asserted."""

import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from small_models import random_causal_lm

import engine_vs_trl
import evaluator_overlap
import update_efficiency
from _common import ARITHMETIC_DIR, machine
from rftlab.engine.adapter import attach_adapter
from rftlab.engine.api import EvaluatorCode
from rftlab.engine.evaluator import EvaluatorPool
from rftlab.engine.packing import build_microbatch, pack_sequences
from rftlab.engine.settings import TrainingSettings
from rftlab.engine.trainer import Trainer
from rftlab.server.job_spec import settings_for


def test_both_sides_of_the_comparison_get_the_same_rows_and_settings():
    args = engine_vs_trl.parse_args(["--steps", "3", "--prompts", "4", "--k", "6", "--eval-rows", "20"])
    train, held_out = engine_vs_trl.split(args)
    assert len(train) == 12 and len(held_out) == 20
    assert not {row["messages"][0]["content"] for row in train} & {
        row["messages"][0]["content"] for row in held_out
    }
    settings = settings_for(engine_vs_trl.job_resource(args))
    assert settings.candidates == 6 and settings.chunk_size == 4
    assert settings.training.loss_method == "dapo" and settings.training.kl_beta == 0.0
    assert (
        settings.training.warmup_steps == 0 and settings.training.weight_decay == engine_vs_trl.WEIGHT_DECAY
    )
    assert (settings.sampling.temperature, settings.sampling.top_p, settings.sampling.top_k) == (1.0, 1.0, 0)
    assert not settings.eval_auto_carveout


def test_the_machine_description_names_cores_cpu_memory_and_torch():
    info = machine()
    assert int(info["nproc"]) >= 1
    assert info["cpu"] and float(info["ram_gib"]) > 0
    assert info["torch"] == torch.__version__


def test_the_update_benchmark_counts_every_matmul_weight_and_runs_the_engines_update():
    base = random_causal_lm(97, hidden_size=32, intermediate_size=64, tie_word_embeddings=True)
    model = attach_adapter(base, rank=4, warm_start=None)
    linear, lora = update_efficiency.matmul_parameters(model)
    per_layer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64  # q, o; k, v (2 KV heads of 8); gate, up, down
    lora_per_layer = 4 * ((32 + 32) * 2 + (32 + 16) * 2 + (32 + 64) * 2 + (64 + 32))
    assert lora == 2 * lora_per_layer
    assert linear == 2 * per_layer + 97 * 32 + lora  # the tied LM head is a matmul of its own

    sequences = update_efficiency.rollouts(groups=2, k=3, prompt_tokens=5, completion_tokens=4, vocab=97)
    assert all(0 not in s.tokens for s in sequences), "token 0 is reserved for padding"
    settings = TrainingSettings(1, 1e-2, 4, 64, 512, 1, 0, 0.0, "dapo", 0.0)
    trainer = Trainer(model, settings, temperature=1.0, planned_steps=1)
    before = [p.detach().clone() for p in trainer.parameters]
    batches = [
        build_microbatch(sequences, rows, update_efficiency.PAD_ID)
        for rows in pack_sequences(sequences, settings.batch_tokens)
    ]
    [stats] = trainer.train(batches)
    assert stats.tokens == 2 * 3 * 4
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.parameters, strict=True))


def test_the_slow_evaluator_scores_exactly_like_exact_match(tmp_path):
    (tmp_path / "slow_match.py").write_text(evaluator_overlap.SLOW_EVALUATOR)
    shutil.copy(ARITHMETIC_DIR / "exact_match.py", tmp_path / "exact_match.py")
    replies = {"68": 1.0, "67": 0.0}
    with EvaluatorPool(
        EvaluatorCode(tmp_path, "slow_match.py", "evaluate"), concurrency=2, timeout_s=10
    ) as pool:
        for reply, expected in replies.items():
            messages = [
                {"role": "user", "content": "What is 23+45?"},
                {"role": "assistant", "content": reply},
            ]
            assert pool.submit(messages, "68", {}).result().value == expected


def test_the_evaluator_benchmark_counts_the_pools_worker_processes():
    assert evaluator_overlap.evaluator_workers() == 0
    with EvaluatorPool(EvaluatorCode(ARITHMETIC_DIR, "exact_match.py", "evaluate"), 3, 10):
        assert evaluator_overlap.evaluator_workers() == 3
