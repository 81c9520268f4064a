"""Chunked log-probabilities equal the full computation: values, entropies and gradients."""

from __future__ import annotations

import torch
from small_models import random_causal_lm
from transformers import AutoTokenizer

from rftlab.engine.adapter import attach_adapter
from rftlab.engine.logprobs import token_logprobs
from rftlab.engine.packing import TrainSequence, build_microbatch, pack_sequences
from rftlab.engine.settings import TrainingSettings
from rftlab.engine.trainer import Trainer
from rftlab.paths import ASSETS_DIR


def full_logprobs(logits_N_V: torch.Tensor, targets_N: torch.Tensor, temperature: float):
    all_N_V = torch.log_softmax(logits_N_V.float() / temperature, dim=-1)
    return all_N_V.gather(-1, targets_N[:, None]).squeeze(-1), -(all_N_V.exp() * all_N_V).sum(-1)


def test_chunks_give_the_full_values_entropies_and_gradients():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden_N_H = torch.randn(11, 16, requires_grad=True)
    targets_N = torch.randint(50, (11,))

    expected, expected_entropy = full_logprobs(head(hidden_N_H), targets_N, 0.7)
    expected.sum().backward()
    expected_grads = hidden_N_H.grad.clone(), head.weight.grad.clone()
    hidden_N_H.grad, head.weight.grad = None, None

    logprobs, entropy = token_logprobs(head, hidden_N_H, targets_N, 0.7, chunk_tokens=4)
    logprobs.sum().backward()

    torch.testing.assert_close(logprobs, expected)
    torch.testing.assert_close(entropy, expected_entropy)
    torch.testing.assert_close(hidden_N_H.grad, expected_grads[0])
    torch.testing.assert_close(head.weight.grad, expected_grads[1])
    assert not entropy.requires_grad


def test_softcapping_is_applied_before_the_temperature():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 30, bias=False)
    hidden_N_H, targets_N = torch.randn(5, 8) * 10, torch.randint(30, (5,))
    capped = torch.tanh(head(hidden_N_H) / 2.0) * 2.0
    expected, _ = full_logprobs(capped, targets_N, 0.5)
    logprobs, _ = token_logprobs(head, hidden_N_H, targets_N, 0.5, softcap=2.0, chunk_tokens=2)
    torch.testing.assert_close(logprobs, expected)


def small_trainer() -> tuple[Trainer, int]:
    tokenizer = AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-arith")
    base = random_causal_lm(len(tokenizer), seed=2, tie_word_embeddings=True)
    model = attach_adapter(base, rank=4, warm_start=None)
    settings = TrainingSettings(1, 1e-3, 4, 4096, 512, 1, 0, 0.0, "grpo", 0.0)
    return Trainer(model, settings, temperature=0.8, planned_steps=1), tokenizer.pad_token_id


def two_groups() -> list[TrainSequence]:
    return [
        TrainSequence([*prompt, *completion], len(prompt), [0.0] * len(completion), 1.0)
        for prompt, completion in (
            ([5, 6, 7, 8], [9, 10, 11]),
            ([5, 6, 7, 8], [12, 13]),
            ([5, 6, 7, 8], [14, 15, 16, 17]),
            ([20, 21], [22, 23, 24]),
            ([20, 21], [25]),
        )
    ]


def test_the_trainer_gets_the_log_probs_of_the_full_forward_pass():
    trainer, pad_id = small_trainer()
    sequences = two_groups()
    [rows] = pack_sequences(sequences, 4096)
    batch = build_microbatch(sequences, rows, pad_id)

    logprobs_N, entropy_N = trainer._logprobs(batch, with_entropy=True)

    mask = torch.zeros(batch.attends_R_L_L.shape).masked_fill(
        ~batch.attends_R_L_L, torch.finfo(torch.float32).min
    )
    logits_R_L_V = trainer.model(
        input_ids=batch.input_ids_R_L, position_ids=batch.position_ids_R_L, attention_mask=mask.unsqueeze(1)
    ).logits
    expected, expected_entropy = full_logprobs(
        logits_R_L_V.flatten(0, 1)[batch.predict_at_N], batch.targets_N, 0.8
    )
    torch.testing.assert_close(logprobs_N, expected)
    torch.testing.assert_close(entropy_N, expected_entropy)


def by_sequence(logprobs_N: torch.Tensor, sequences: list[TrainSequence], batches) -> dict[int, torch.Tensor]:
    order = [index for rows in batches for row in rows for index in row]
    lengths = [len(sequences[i].tokens) - sequences[i].completion_start for i in order]
    return dict(zip(order, logprobs_N.split(lengths), strict=True))


def test_sequences_laid_out_alone_get_the_log_probs_of_the_shared_prompt_mask():
    trainer, pad_id = small_trainer()
    sequences = two_groups()
    results = {}
    for share in (True, False):
        batches = pack_sequences(sequences, 4096, share_prompts=share)
        microbatches = [build_microbatch(sequences, rows, pad_id, share_prompts=share) for rows in batches]
        logprobs_N = torch.cat([trainer._logprobs(batch, with_entropy=False)[0] for batch in microbatches])
        results[share] = by_sequence(logprobs_N, sequences, batches)
        assert all((batch.attends_R_L_L is None) == (not share) for batch in microbatches)
    assert sorted(results[True]) == sorted(results[False]) == list(range(len(sequences)))
    for index in range(len(sequences)):
        torch.testing.assert_close(results[False][index], results[True][index])


def test_a_sequence_laid_out_alone_restarts_its_positions_and_pads_at_zero():
    sequences = two_groups()[:2]
    [rows] = pack_sequences(sequences, 4096, share_prompts=False)
    batch = build_microbatch(sequences, rows, 0, share_prompts=False)
    positions = batch.position_ids_R_L.tolist()
    assert positions == [[0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5]]
    assert batch.input_ids_R_L.tolist()[0] == [5, 6, 7, 8, 9, 10, 11, 5, 6, 7, 8, 12, 13]


def test_activation_checkpointing_takes_the_same_step(monkeypatch):
    import rftlab.engine.trainer as trainer_module

    sequences = [
        TrainSequence(s.tokens, s.completion_start, s.old_logprobs, advantage)
        for s, advantage in zip(two_groups(), (1.0, -1.0, 0.5, 1.0, -1.0), strict=True)
    ]
    weights = []
    for threshold in (10**12, 0):  # never checkpointed, always checkpointed
        monkeypatch.setattr(trainer_module, "CHECKPOINTED_FROM_PARAMETERS", threshold)
        trainer, pad_id = small_trainer()
        base = trainer.model.get_base_model()
        assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules()) == (threshold == 0)
        [rows] = pack_sequences(sequences, 4096)
        trainer.train([build_microbatch(sequences, rows, pad_id)])
        weights.append(
            {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        )
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value)
