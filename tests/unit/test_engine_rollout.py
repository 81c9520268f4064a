"""Rollouts on a small random-weight Qwen2 with the bundled tokenizer: batched sampling, stop handling, and
log-probabilities that agree with the trainer's packed forward pass."""

import copy

import pytest
import torch
from small_models import random_causal_lm
from transformers import AutoTokenizer

from rftlab.engine.adapter import attach_adapter
from rftlab.engine.packing import TrainSequence, build_microbatch, pack, pack_sequences
from rftlab.engine.rollout import HFSampler, render_prompt
from rftlab.engine.settings import SamplingParams, TrainingSettings
from rftlab.engine.trainer import Trainer
from rftlab.paths import ASSETS_DIR

TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\ntools: ' }}{%- for tool in tools %}{{- tool['name'] + ' ' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-arith")


@pytest.fixture(scope="module")
def model(tokenizer):
    base = random_causal_lm(
        len(tokenizer),
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return attach_adapter(base, rank=4, warm_start=None)


def prompts(tokenizer, questions):
    return [render_prompt(tokenizer, {"messages": [{"role": "user", "content": q}]}) for q in questions]


def test_render_prompt_passes_tools_to_the_chat_template(tokenizer):
    tokenizer = AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-arith")
    tokenizer.chat_template = TOOLS_TEMPLATE
    row = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "calculator"}]}
    text = tokenizer.decode(render_prompt(tokenizer, row))
    assert text.startswith("<|im_start|>system\ntools: calculator")
    assert text.endswith("<|im_start|>assistant\n")


def test_sampling_yields_every_completion_with_one_logprob_per_token(model, tokenizer):
    sampler = HFSampler(model, tokenizer, batch_size=5)
    batch_prompts = [
        p for p in prompts(tokenizer, ["What is 1+2?", "What is 10+23?", "Hi"]) for _ in range(4)
    ]
    batches = list(sampler.generate(batch_prompts, SamplingParams(1.0, 0.9, 20, 6)))
    assert [len(b) for b in batches] == [5, 5, 2]
    completions = [c for b in batches for c in b]
    assert [c.prompt_index for c in completions] == list(range(12))
    for completion in completions:
        assert completion.prompt_ids == batch_prompts[completion.prompt_index]
        assert 1 <= len(completion.completion_ids) <= 6
        assert len(completion.logprobs) == len(completion.completion_ids)
        assert all(lp <= 0 for lp in completion.logprobs)
        ends_with_eos = completion.completion_ids[-1] == tokenizer.eos_token_id
        assert completion.finish_reason == ("stop" if ends_with_eos else "length")
        assert tokenizer.eos_token_id not in completion.completion_ids[:-1]


def test_a_stop_string_cuts_the_completion_and_is_left_out_of_the_text(model, tokenizer):
    sampler = HFSampler(model, tokenizer)
    prompt = prompts(tokenizer, ["What is 4+4?"])
    greedy = SamplingParams(0.0, 1.0, 0, 12)
    [[free]] = list(sampler.generate(prompt, greedy))
    text = free.text
    assert len(text) >= 4, "the random model should say something"
    stop = text[2]
    [[stopped]] = list(sampler.generate(prompt, SamplingParams(0.0, 1.0, 0, 12, stop=(stop,))))
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[: text.index(stop)]
    assert free.completion_ids[: len(stopped.completion_ids)] == stopped.completion_ids


def test_sampling_logprobs_match_the_trainers_packed_forward(model, tokenizer):
    """The update uses the sampler's log-probs as the old policy's: with left padding in generation and
    several sequences per packed row in training, both must compute the same numbers."""
    temperature = 0.8
    sampler = HFSampler(model, tokenizer)
    batch_prompts = prompts(tokenizer, ["What is 1+2?", "What is 10+23? Tell me now.", "Hi"])
    completions = [
        c for b in sampler.generate(batch_prompts * 3, SamplingParams(temperature, 1.0, 0, 6)) for c in b
    ]
    sequences = [
        TrainSequence(c.prompt_ids + c.completion_ids, len(c.prompt_ids), c.logprobs, 1.0)
        for c in completions
    ]
    settings = TrainingSettings(1, 1e-3, 4, 10_000, 1000, 1, 0, 0.0, "dapo", 0.0)
    trainer = Trainer(model, settings, temperature, planned_steps=1)
    [rows] = pack([len(s.tokens) for s in sequences], 10_000)
    assert any(len(row) > 1 for row in rows)
    batch = build_microbatch(sequences, rows, tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs_N, _ = trainer._logprobs(batch, with_entropy=False)
    assert torch.allclose(logprobs_N, batch.old_logprobs_N, atol=1e-4)


def test_groups_sharing_a_prompt_get_the_same_logprobs_as_sequences_laid_out_alone(model, tokenizer):
    sampler = HFSampler(model, tokenizer)
    group_prompts = [p for p in prompts(tokenizer, ["What is 1+2?", "Hi there"]) for _ in range(4)]
    completions = [c for b in sampler.generate(group_prompts, SamplingParams(1.0, 1.0, 0, 6)) for c in b]
    sequences = [
        TrainSequence(c.prompt_ids + c.completion_ids, len(c.prompt_ids), c.logprobs, 1.0)
        for c in completions
    ]
    settings = TrainingSettings(1, 1e-3, 4, 10_000, 1000, 1, 0, 0.0, "dapo", 0.0)
    trainer = Trainer(model, settings, 1.0, planned_steps=1)
    [rows] = pack_sequences(sequences, 10_000)
    shared = build_microbatch(sequences, rows, tokenizer.pad_token_id)
    alone = build_microbatch(sequences, [[i] for i in range(len(sequences))], tokenizer.pad_token_id)
    assert shared.input_ids_R_L.numel() < alone.input_ids_R_L.numel() / 2
    with torch.no_grad():
        shared_N, _ = trainer._logprobs(shared, with_entropy=False)
        alone_N, _ = trainer._logprobs(alone, with_entropy=False)
    order = [i for row in rows for i in row]
    by_sequence = torch.cat([alone_N[alone.sequence_ids_N == i] for i in order])
    assert torch.allclose(shared_N, by_sequence, atol=1e-5)


def trainer_logprobs(trainer: Trainer, completions, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the trainer's log-probs of the completions' tokens, the sampler's)."""
    sequences = [
        TrainSequence(c.prompt_ids + c.completion_ids, len(c.prompt_ids), c.logprobs, 1.0)
        for c in completions
    ]
    [rows] = pack_sequences(sequences, 10_000)
    batch = build_microbatch(sequences, rows, pad_id)
    with torch.no_grad():
        logprobs_N, _ = trainer._logprobs(batch, with_entropy=False)
    return logprobs_N, batch.old_logprobs_N


def test_a_small_models_sampler_follows_the_adapter_as_it_trains(model, tokenizer):
    """Small CPU models sample from a merged copy of the policy: it must carry the adapter's weights as they
    are at each call, not as they were when the sampler was made."""
    policy = copy.deepcopy(model)
    settings = TrainingSettings(1, 1e-3, 4, 10_000, 1000, 1, 0, 0.0, "dapo", 0.0)
    trainer = Trainer(policy, settings, 1.0, planned_steps=1)
    sampler = HFSampler(policy, tokenizer)
    group_prompts = [p for p in prompts(tokenizer, ["What is 1+2?", "Hi there"]) for _ in range(3)]
    params = SamplingParams(1.0, 1.0, 0, 6)
    for scale in (0.3, 0.6):
        with torch.no_grad():
            for name, parameter in policy.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(std=scale)
        completions = [c for b in sampler.generate(group_prompts, params) for c in b]
        trained_N, sampled_N = trainer_logprobs(trainer, completions, tokenizer.pad_token_id)
        assert torch.allclose(trained_N, sampled_N, atol=1e-4)
        with policy.disable_adapter():
            base_N, _ = trainer_logprobs(trainer, completions, tokenizer.pad_token_id)
        assert not torch.allclose(base_N, sampled_N, atol=1e-2), "the adapter should change the numbers"
