"""Checkpoints resume exactly (optimizer, scheduler, both RNGs) and load without running pickled code."""

from __future__ import annotations

import os
import pickle
import random

import pytest
import torch
from small_models import random_causal_lm

from rftlab.engine.adapter import attach_adapter
from rftlab.engine.checkpoint import restore_checkpoint, save_checkpoint
from rftlab.engine.settings import TrainingSettings
from rftlab.engine.trainer import Trainer

SETTINGS = TrainingSettings(
    epochs=1,
    learning_rate=1e-3,
    lora_rank=4,
    batch_tokens=256,
    max_context_length=64,
    gradient_accumulation_steps=1,
    warmup_steps=3,
    weight_decay=0.0,
    loss_method="grpo",
    kl_beta=0.0,
)


def tiny_trainer() -> Trainer:
    base = random_causal_lm(
        32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    model = attach_adapter(base, rank=4, warm_start=None)
    return Trainer(model, SETTINGS, temperature=1.0, planned_steps=10)


def take_a_step(trainer: Trainer) -> None:
    loss = trainer.model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.square().mean()
    loss.backward()
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad()


def test_a_restored_checkpoint_continues_exactly(tmp_path):
    trainer = tiny_trainer()
    take_a_step(trainer)
    random.seed(7)
    torch.manual_seed(7)
    save_checkpoint(tmp_path, 1, trainer.model, trainer, {"step": 1})
    expected = (random.random(), torch.rand(3), trainer.scheduler.get_last_lr())

    fresh = tiny_trainer()
    random.seed(99)
    torch.manual_seed(99)
    assert restore_checkpoint(tmp_path, fresh.model, fresh) == {"step": 1}
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])
    assert fresh.scheduler.get_last_lr() == expected[2]
    saved, restored = trainer.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert saved.keys() == restored.keys() and saved
    assert all(torch.equal(saved[k]["exp_avg_sq"], restored[k]["exp_avg_sq"]) for k in saved)
    assert any(torch.count_nonzero(state["exp_avg_sq"]) for state in restored.values())


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch planted-code-ran",))


def test_a_planted_state_file_does_not_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = tiny_trainer()
    save_checkpoint(tmp_path / "ckpt", 1, trainer.model, trainer, {"step": 1})
    (state_file,) = (tmp_path / "ckpt").glob("step-*/state.pt")
    with state_file.open("wb") as out:
        pickle.dump({"optimizer": _RunsCode()}, out)

    with pytest.raises(pickle.UnpicklingError):
        restore_checkpoint(tmp_path / "ckpt", trainer.model, trainer)
    assert not (tmp_path / "planted-code-ran").exists()
