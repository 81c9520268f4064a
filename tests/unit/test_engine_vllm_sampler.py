"""VLLMSampler and choose_sampler. vLLM does not run on CPU-only machines, so a stand-in `vllm` package is put
in sys.modules: it records what the sampler hands vLLM (engine arguments, token prompts, SamplingParams, the
LoRARequest) and answers with outputs shaped like vLLM's `RequestOutput` / `CompletionOutput`, stopping the
way vLLM's engine does (length checked first, then eos, then stop strings on the detokenized text). The token
streams and log-probabilities it returns are scripted by each test, not sampled: these tests check the
sampler's side of the contract, not vLLM."""

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from rftlab.engine.adapter import attach_adapter
from rftlab.engine.api import JobFailed
from rftlab.engine.models import choose_placement, load_base_model, resolve_model_source
from rftlab.engine.rollout import HFSampler, render_prompt
from rftlab.engine.settings import SamplingParams
from rftlab.engine.vllm_sampler import (
    GPU_MEMORY_UTILIZATION,
    SAMPLER_ENV,
    VLLMSampler,
    choose_sampler,
    vllm_max_lora_rank,
)

TINY = "tiny-arith"


@dataclass
class StandInSamplingParams:
    """The vllm.SamplingParams fields the sampler may set, with vLLM's defaults; any other name fails."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None
    max_tokens: int | None = 16
    logprobs: int | None = None


class StandInTokensPrompt(TypedDict):
    prompt_token_ids: list[int]


@dataclass
class StandInLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


@dataclass
class StandInLogprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class StandInCompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, StandInLogprob]] | None
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class StandInRequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: None
    outputs: list[StandInCompletionOutput]
    finished: bool = True


@dataclass
class StandInVLLM:
    """What the sampler did with the stand-in package, and the token streams it answers with."""

    tokenizer: object
    streams: dict[tuple[int, ...], list[int]] = field(default_factory=dict)
    engines: list = field(default_factory=list)
    startup_error: Exception | None = None

    def logprob(self, position: int) -> float:
        return -0.25 * (position + 1)

    def complete(self, prompt_ids: list[int], params: StandInSamplingParams) -> StandInCompletionOutput:
        eos = self.tokenizer.eos_token_id
        ids: list[int] = []
        finish, text = None, ""
        for token in self.streams[tuple(prompt_ids)]:
            ids.append(token)
            stops_here = token == eos or token in (params.stop_token_ids or [])
            finish = "length" if len(ids) >= params.max_tokens else "stop" if stops_here else None
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if finish != "stop":  # an eos ends the request before stop strings are looked for
                found = [text.find(stop) for stop in params.stop or [] if stop in text]
                if found:
                    finish, text = "stop", text[: found[0]]
            if finish:
                break
        assert finish, "each scripted stream must end the request"
        logprobs = None
        if params.logprobs is not None:
            logprobs = [{token: StandInLogprob(self.logprob(i), 1)} for i, token in enumerate(ids)]
        return StandInCompletionOutput(0, text, ids, None, logprobs, finish)


@pytest.fixture
def vllm(monkeypatch, tokenizer):
    stand_in = StandInVLLM(tokenizer)

    class LLM:
        def __init__(self, model: str, **kwargs):
            if stand_in.startup_error is not None:
                raise stand_in.startup_error
            self.model, self.kwargs, self.calls = model, kwargs, []
            stand_in.engines.append(self)

        def generate(self, prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
            self.calls.append(
                {"prompts": prompts, "params": sampling_params, "use_tqdm": use_tqdm, "lora": lora_request}
            )
            return [
                StandInRequestOutput(
                    str(i), None, p["prompt_token_ids"], None, [stand_in.complete(p["prompt_token_ids"], sp)]
                )
                for i, (p, sp) in enumerate(zip(prompts, sampling_params, strict=True))
            ]

    package = types.ModuleType("vllm")
    package.LLM, package.SamplingParams = LLM, StandInSamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = StandInTokensPrompt
    lora = types.ModuleType("vllm.lora")
    lora_request = types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = StandInLoRARequest
    for name, module in [
        ("vllm", package),
        ("vllm.inputs", inputs),
        ("vllm.lora", lora),
        ("vllm.lora.request", lora_request),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    return stand_in


@pytest.fixture(scope="module")
def tokenizer():
    return load_base_model(TINY, choose_placement())[1]


@pytest.fixture
def model():
    base, _ = load_base_model(TINY, choose_placement())
    return attach_adapter(base, rank=4, warm_start=None)


def prompt(tokenizer, question: str) -> list[int]:
    return render_prompt(tokenizer, {"messages": [{"role": "user", "content": question}]})


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def sampler_for(model, tokenizer, lora_rank: int = 4) -> VLLMSampler:
    return VLLMSampler(model, tokenizer, resolve_model_source(TINY), lora_rank)


def run(sampler, prompts, params):
    batches = list(sampler.generate(prompts, params))
    assert len(batches) == 1
    return batches[0]


def test_the_engine_loads_the_base_model_in_bf16_with_lora_and_processed_logprobs(vllm, model, tokenizer):
    sampler_for(model, tokenizer)
    [engine] = vllm.engines
    assert engine.model == resolve_model_source(TINY)
    assert engine.kwargs["dtype"] == "bfloat16"
    assert engine.kwargs["enable_lora"] is True
    assert engine.kwargs["max_lora_rank"] == 8, "rank 4 rounded up to the smallest rank vLLM accepts"
    assert engine.kwargs["max_loras"] == 1
    assert engine.kwargs["gpu_memory_utilization"] == GPU_MEMORY_UTILIZATION < 0.5
    assert engine.kwargs["logprobs_mode"] == "processed_logprobs"
    assert engine.kwargs["generation_config"] == "vllm"


def test_max_lora_rank_covers_a_warm_start_adapter_of_a_larger_rank(vllm, tokenizer):
    base, _ = load_base_model(TINY, choose_placement())
    sampler_for(attach_adapter(base, rank=16, warm_start=None), tokenizer, lora_rank=4)
    assert vllm.engines[0].kwargs["max_lora_rank"] == 16


def test_lora_ranks_round_up_to_the_ranks_vllm_accepts():
    assert [vllm_max_lora_rank(rank) for rank in (1, 8, 9, 64, 300, 512)] == [8, 8, 16, 64, 320, 512]
    with pytest.raises(JobFailed, match="above the largest vLLM serves"):
        vllm_max_lora_rank(513)


def test_a_failed_engine_start_fails_the_job_and_names_the_way_out(vllm, model, tokenizer):
    vllm.startup_error = ValueError("not enough KV cache memory")
    with pytest.raises(JobFailed, match=r"not enough KV cache memory.*RFTLAB_SAMPLER=hf"):
        sampler_for(model, tokenizer)


def test_sampling_params_map_the_jobs_knobs_with_a_torch_drawn_seed_per_prompt(vllm, model, tokenizer):
    prompts = [prompt(tokenizer, q) for q in ("What is 1+2?", "What is 3+4?")] * 2
    for ids in prompts:
        vllm.streams[tuple(ids)] = [*encode(tokenizer, "7"), tokenizer.eos_token_id]
    sampler = sampler_for(model, tokenizer)
    params = SamplingParams(0.7, 0.9, 0, 5, stop=("\n",))

    torch.manual_seed(3)
    run(sampler, prompts, params)
    torch.manual_seed(3)
    run(sampler, prompts, SamplingParams(0.7, 0.9, 40, 5))
    first, second = vllm.engines[0].calls

    assert first["prompts"] == [{"prompt_token_ids": ids} for ids in prompts]
    assert first["use_tqdm"] is False
    sent = first["params"]
    assert len(sent) == len(prompts)
    for one in sent:
        assert (one.temperature, one.top_p, one.top_k, one.max_tokens) == (0.7, 0.9, 0, 5)
        assert one.stop == ["\n"]
        assert one.logprobs == 0, "the sampled token's log-probability, and no others"
        assert isinstance(one.seed, int)
    seeds = [one.seed for one in sent]
    assert len(set(seeds)) == len(seeds), "copies of a prompt must not share a seed"
    assert [one.seed for one in second["params"]] == seeds, "the same torch seed gives the same vLLM seeds"
    assert [one.top_k for one in second["params"]] == [40] * 4
    assert [one.stop for one in second["params"]] == [None] * 4
    run(sampler, prompts, params)
    assert [one.seed for one in vllm.engines[0].calls[2]["params"]] != seeds


def test_greedy_maps_to_vllms_greedy_decoding_without_drawing_seeds(vllm, model, tokenizer):
    ids = prompt(tokenizer, "What is 2+2?")
    vllm.streams[tuple(ids)] = [*encode(tokenizer, "4"), tokenizer.eos_token_id]
    sampler = sampler_for(model, tokenizer)
    rng_before = torch.get_rng_state()
    run(sampler, [ids], SamplingParams(0.7, 0.9, 40, 8).as_greedy())
    [sent] = vllm.engines[0].calls[0]["params"]
    assert (sent.temperature, sent.top_p, sent.top_k, sent.seed) == (0.0, 1.0, 0, None)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_a_new_lora_id_and_folder_once_the_adapter_weights_change(vllm, model, tokenizer):
    ids = prompt(tokenizer, "What is 5+5?")
    vllm.streams[tuple(ids)] = [*encode(tokenizer, "10"), tokenizer.eos_token_id]
    sampler = sampler_for(model, tokenizer)
    params = SamplingParams(1.0, 1.0, 0, 8)

    def lora_request():
        run(sampler, [ids], params)
        return vllm.engines[0].calls[-1]["lora"]

    def saved_weights_match(request) -> bool:
        saved = load_file(f"{request.lora_path}/adapter_model.safetensors")
        current = get_peft_model_state_dict(model)
        return saved.keys() == current.keys() and all(torch.equal(saved[k], current[k].cpu()) for k in saved)

    first = lora_request()
    assert first.lora_int_id >= 1
    assert saved_weights_match(first)
    assert lora_request() is first, "unchanged weights reuse the adapter vLLM already holds"

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.1)
    sum(p.sum() for p in trainable).backward()
    optimizer.step()
    second = lora_request()
    assert second.lora_int_id > first.lora_int_id
    assert second.lora_path != first.lora_path
    assert saved_weights_match(second)

    lora_b = next(p for name, p in model.named_parameters() if "lora_B" in name)
    with torch.no_grad():
        lora_b.add_(1.0)
    third = lora_request()
    assert third.lora_int_id > second.lora_int_id
    assert saved_weights_match(third)
    assert [Path(r.lora_path).exists() for r in (first, second, third)] == [False, False, True]


def test_completions_are_cut_as_hf_sampler_cuts_them(vllm, model, tokenizer):
    eos = tokenizer.eos_token_id
    questions = ["a", "b", "c", "d", "e"]
    prompts = [prompt(tokenizer, f"What is {q}?") for q in questions]
    streams = [
        [*encode(tokenizer, "12"), eos, *encode(tokenizer, "34")],  # eos: kept, and the end
        [*encode(tokenizer, "12\n34"), eos],  # a stop string: cut after the token that completes it
        encode(tokenizer, "1234567890"),  # neither: cut at max_output_tokens
        [*encode(tokenizer, "1234"), eos],  # eos as the last allowed token: vLLM says "length"
        [*encode(tokenizer, "5;6\n7"), eos],  # two stop strings: the first one in the text wins
    ]
    for ids, stream in zip(prompts, streams, strict=True):
        vllm.streams[tuple(ids)] = stream
    max_tokens = len(streams[3])
    params = SamplingParams(1.0, 1.0, 0, max_tokens, stop=("\n", ";"))

    completions = run(sampler_for(model, tokenizer), prompts, params)

    reference = HFSampler(model, tokenizer)
    for index, (completion, ids, stream) in enumerate(zip(completions, prompts, streams, strict=True)):
        head = stream[:max_tokens]
        expected = reference._finish(index, ids, head, [vllm.logprob(i) for i in range(len(head))], params)
        assert completion == expected
    by_case = [(c.completion_ids, c.text, c.finish_reason) for c in completions]
    assert by_case[0] == ([*encode(tokenizer, "12"), eos], "12", "stop")
    assert by_case[1][1:] == ("12", "stop") and "\n" in tokenizer.decode(by_case[1][0])
    assert by_case[2] == (streams[2][:max_tokens], tokenizer.decode(streams[2][:max_tokens]), "length")
    assert by_case[3] == (streams[3], "1234", "stop")
    assert by_case[4][1:] == ("5", "stop")


def test_every_end_of_sequence_id_of_the_generation_config_stops_a_completion(vllm, model, tokenizer):
    end_of_turn, other_end = encode(tokenizer, "#")[0], encode(tokenizer, "=")[0]
    model.generation_config.eos_token_id = [end_of_turn, other_end]
    prompts = [prompt(tokenizer, "What is a?"), prompt(tokenizer, "What is b?")]
    vllm.streams[tuple(prompts[0])] = [*encode(tokenizer, "12"), end_of_turn, *encode(tokenizer, "user 34")]
    vllm.streams[tuple(prompts[1])] = [*encode(tokenizer, "5"), other_end, *encode(tokenizer, "67")]

    completions = run(sampler_for(model, tokenizer), prompts, SamplingParams(1.0, 1.0, 0, 16))

    assert vllm.engines[0].calls[0]["params"][0].stop_token_ids == [
        end_of_turn,
        other_end,
        tokenizer.eos_token_id,
    ]
    assert [(c.completion_ids, c.text, c.finish_reason) for c in completions] == [
        ([*encode(tokenizer, "12"), end_of_turn], "12#", "stop"),
        ([*encode(tokenizer, "5"), other_end], "5=", "stop"),
    ]


def test_choose_sampler_picks_hf_generate_without_a_gpu(monkeypatch, model, tokenizer):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(SAMPLER_ENV, raising=False)
    assert isinstance(choose_sampler(model, tokenizer, TINY, 4), HFSampler)
    monkeypatch.setenv(SAMPLER_ENV, "hf")
    assert isinstance(choose_sampler(model, tokenizer, TINY, 4), HFSampler)


def test_forcing_vllm_without_vllm_or_cuda_fails_the_job_saying_what_is_missing(
    monkeypatch, model, tokenizer
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(SAMPLER_ENV, "vllm")
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` raises ImportError, installed or not
    with pytest.raises(JobFailed) as failure:
        choose_sampler(model, tokenizer, TINY, 4)
    message = str(failure.value)
    assert "RFTLAB_SAMPLER=vllm" in message
    assert "no CUDA GPU" in message
    assert "vLLM is not installed" in message and "pip install -e '.[local,vllm]'" in message


def test_forcing_vllm_with_vllm_but_no_gpu_names_only_the_gpu(monkeypatch, vllm, model, tokenizer):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(SAMPLER_ENV, "vllm")
    with pytest.raises(JobFailed, match="no CUDA GPU") as failure:
        choose_sampler(model, tokenizer, TINY, 4)
    assert "not installed" not in str(failure.value)
    assert vllm.engines == []


def test_choose_sampler_picks_vllm_where_it_is_installed_and_cuda_is_visible(
    monkeypatch, vllm, model, tokenizer
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(SAMPLER_ENV, raising=False)
    sampler = choose_sampler(model, tokenizer, TINY, 4, max_model_len=1024)
    assert isinstance(sampler, VLLMSampler)
    assert vllm.engines[0].model == resolve_model_source(TINY)
    assert vllm.engines[0].kwargs["max_model_len"] == 1024
    monkeypatch.setenv(SAMPLER_ENV, "hf")
    assert isinstance(choose_sampler(model, tokenizer, TINY, 4), HFSampler)
    monkeypatch.setitem(sys.modules, "vllm", None)
    monkeypatch.delenv(SAMPLER_ENV)
    assert isinstance(choose_sampler(model, tokenizer, TINY, 4), HFSampler), "falls back without vLLM"


def test_an_unknown_sampler_name_fails_the_job(monkeypatch, model, tokenizer):
    monkeypatch.setenv(SAMPLER_ENV, "sglang")
    with pytest.raises(JobFailed, match="use hf or vllm"):
        choose_sampler(model, tokenizer, TINY, 4)
