"""Sampling stops at every end-of-sequence id a model folder declares: its generation_config's (a list here) and
its tokenizer's. The folder holds a small random-weight model with the bundled tiny-arith config and tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from rftlab.engine.models import choose_placement, load_base
from rftlab.engine.rollout import HFSampler, render_prompt
from rftlab.engine.settings import SamplingParams
from rftlab.paths import ASSETS_DIR

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi-eos-model")
    config = AutoConfig.from_pretrained(
        ASSETS_DIR / "tiny-arith",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        layer_types=["full_attention"] * 2,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-arith").save_pretrained(folder)
    return folder


def declare_eos(folder, eos_ids: list[int]) -> None:
    path = folder / "generation_config.json"
    generation_config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**generation_config, "eos_token_id": eos_ids}))


def sample_once(folder, seed: int = 0):
    loaded = load_base(str(folder), choose_placement())
    prompt = render_prompt(loaded.tokenizer, {"messages": [{"role": "user", "content": "What is 12+34?"}]})
    torch.manual_seed(seed)
    [[completion]] = HFSampler(loaded.model, loaded.tokenizer).generate(
        [prompt], SamplingParams(1.0, 1.0, 0, MAX_TOKENS)
    )
    return completion, loaded.tokenizer


def first_new_tokens(ids: list[int], at_least: int) -> tuple[int, int]:
    """Positions of two tokens that each occur there for the first time, the first at `at_least` or later."""
    positions = [i for i in range(at_least, len(ids)) if ids[i] not in ids[:i]]
    return positions[0], positions[1]


def test_a_completion_stops_at_each_end_of_sequence_id_the_generation_config_lists(folder):
    tokenizer_eos = AutoTokenizer.from_pretrained(folder).eos_token_id
    declare_eos(folder, [tokenizer_eos])
    free, _ = sample_once(folder)
    assert free.finish_reason == "length", "pick another seed: the random model ended by itself"
    ids = free.completion_ids
    first, second = first_new_tokens(ids, at_least=2)

    declare_eos(folder, [ids[second], ids[first]])
    stopped, tokenizer = sample_once(folder)
    assert stopped.completion_ids == ids[: first + 1]
    assert stopped.finish_reason == "stop"
    assert len(stopped.logprobs) == first + 1

    declare_eos(folder, [ids[second]])
    stopped, _ = sample_once(folder)
    assert stopped.completion_ids == ids[: second + 1]
    assert stopped.finish_reason == "stop"
    assert stopped.text == tokenizer.decode(ids[: second + 1], skip_special_tokens=True)


def test_the_tokenizers_eos_still_stops_when_the_generation_config_names_others(folder):
    declare_eos(folder, [5, 6])
    loaded = load_base(str(folder), choose_placement())
    eos = loaded.tokenizer.eos_token_id
    sampler = HFSampler(loaded.model, loaded.tokenizer)
    assert sampler.eos_ids == [5, 6, eos]
    cut = sampler._finish(0, [], [9, eos, 9, 5], [0.0] * 4, SamplingParams(1.0, 1.0, 0, MAX_TOKENS))
    assert (cut.completion_ids, cut.finish_reason) == ([9, eos], "stop")


def test_the_sampler_ignores_sampling_defaults_of_the_generation_config(folder):
    """A generation_config with Qwen-style sampling defaults (top_k 1 here: greedy) must not change what the
    job's sampling params draw."""
    tokenizer_eos = AutoTokenizer.from_pretrained(folder).eos_token_id
    declare_eos(folder, [tokenizer_eos])
    plain = [sample_once(folder, seed)[0].completion_ids for seed in (2, 3)]
    path = folder / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "top_k": 1, "repetition_penalty": 1.5}))
    with_defaults = [sample_once(folder, seed)[0].completion_ids for seed in (2, 3)]
    assert with_defaults == plain
