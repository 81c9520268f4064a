"""A job's update with activation checkpointing, on Qwen2- and Llama-shaped models loaded from a folder as a job
loads its base model, writes no deprecation warning (or any word about checkpointing) to the job's log."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

import rftlab.engine.trainer as trainer_module
from rftlab.engine.adapter import attach_adapter
from rftlab.engine.models import choose_placement, load_base
from rftlab.engine.packing import TrainSequence, build_microbatch, pack_sequences
from rftlab.engine.settings import TrainingSettings
from rftlab.paths import ASSETS_DIR

SETTINGS = TrainingSettings(1, 1e-3, 4, 4096, 512, 1, 0, 0.0, "grpo", 0.0)


@pytest.mark.parametrize("config_class", [Qwen2Config, LlamaConfig])
def test_a_checkpointed_update_writes_no_deprecation_warning(config_class, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(trainer_module, "CHECKPOINTED_FROM_PARAMETERS", 0)  # real models are checkpointed
    tokenizer = AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-arith")
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    capfd.readouterr()
    sequences = [
        TrainSequence([5, 6, 7, 8, 9, 10], 4, [-1.0, -1.0], 1.0),
        TrainSequence([5, 6, 7, 8, 11], 4, [-1.0], -1.0),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_base(str(tmp_path / "model"), choose_placement())
        trainer = trainer_module.Trainer(attach_adapter(loaded.model, 4, None), SETTINGS, 1.0, 1)
        [rows] = pack_sequences(sequences, 4096)
        [stats] = trainer.train([build_microbatch(sequences, rows, tokenizer.pad_token_id)])
    base = trainer.model.get_base_model()
    assert any(getattr(module, "gradient_checkpointing", False) for module in base.modules())
    assert stats.grad_norm > 0
    noise = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not noise, noise
    log = capfd.readouterr().err
    assert "checkpointing" not in log and "deprecated" not in log, log
