"""Sampling with vLLM on a CUDA GPU (`VLLMSampler`), and `choose_sampler`, which picks it or `HFSampler`.

A vLLM engine runs beside the trainer on the same GPU. It loads the base model itself (bf16) with LoRA
enabled and takes `GPU_MEMORY_UTILIZATION` of the GPU's memory for its weights, activations and KV cache; the
trainer keeps the rest. The policy reaches vLLM as a LoRA adapter: at each `generate` call whose adapter
weights changed since the previous call, the adapter is written in PEFT format and passed as a `LoRARequest`
with a new id, so vLLM never samples with a stale cached copy.

Log-probabilities. The engine's convention (see rollout.py) is the sampled token's log-probability under the
sampling temperature, before top-k / top-p truncation. No vLLM `logprobs_mode` gives exactly that: "raw_*" are
taken before the temperature is applied, "processed_*" after the temperature and after top-k / top-p (the kept
tokens renormalised). This sampler uses "processed_logprobs" (vLLM 0.10.0, where the mode appeared, left the
temperature out of "processed"; the `vllm` extra asks for 0.10.2, which applies it). That matches the
convention exactly when top-k and top-p are off (top_k 0, top_p 1) and for greedy sampling (a plain
log-softmax). With truncation on, each value is the convention's plus -log(the probability mass the kept
tokens hold at that temperature): never negative, and small while the kept tokens hold most of the mass.

Completions are cut as `HFSampler` cuts them: vLLM stops at every end-of-sequence id the model declares
(`stop_token_ids`), which is kept, or after the token that completes a stop string, which is kept while the
text leaves the stop string out. `finish_reason` follows `HFSampler` too: "stop" for eos or a stop string even when it came with the last allowed token, where vLLM
says "length". Each prompt gets its own vLLM seed, drawn from torch's CPU generator, so a seeded job draws the
same completions on every run (as far as vLLM's batched kernels are deterministic). All completions of a call
come back as one batch: vLLM schedules the whole list at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model_state_dict
from transformers import PreTrainedTokenizerBase

from rftlab.engine.adapter import save_adapter
from rftlab.engine.api import JobFailed
from rftlab.engine.models import declared_eos_ids, resolve_model_source
from rftlab.engine.rollout import Completion, HFSampler, Sampler, text_before_stop
from rftlab.engine.settings import SamplingParams

SAMPLER_ENV = "RFTLAB_SAMPLER"
VLLM_INSTALL = "pip install -e '.[local,vllm]' in the repository"
GPU_MEMORY_UTILIZATION = 0.3
LOGPROBS_MODE = "processed_logprobs"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for `max_lora_rank`; an adapter of any rank up to it can be served."""
SEED_BOUND = 2**31 - 1


def vllm_max_lora_rank(rank: int) -> int:
    for supported in VLLM_LORA_RANKS:
        if rank <= supported:
            return supported
    raise JobFailed(
        f"LoRA rank {rank} is above the largest vLLM serves ({VLLM_LORA_RANKS[-1]}); use a smaller "
        f"trainingConfig.loraRank, or {SAMPLER_ENV}=hf to sample with Hugging Face generate"
    )


class VLLMSampler:
    def __init__(
        self,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        source: str,
        lora_rank: int,
        max_model_len: int | None = None,
    ):
        """`source`: the base model's local folder or hub id; `max_model_len`: the longest prompt plus
        completion vLLM reserves room for (None: the model's own context length, which may not fit in vLLM's
        share of the GPU for long-context models)."""
        from vllm import LLM

        self.model, self.tokenizer = model, tokenizer
        self.eos_ids = declared_eos_ids(model, tokenizer)
        # a warm-start adapter keeps the rank it was saved with
        adapter_rank = max(lora_rank, model.peft_config[model.active_adapter].r)
        try:
            self.llm = LLM(
                model=source,
                dtype="bfloat16",
                enable_lora=True,
                max_lora_rank=vllm_max_lora_rank(adapter_rank),
                max_loras=1,
                gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
                max_model_len=max_model_len,
                logprobs_mode=LOGPROBS_MODE,
                # take no sampling defaults from the model's generation_config.json; its end-of-sequence ids
                # come in as stop_token_ids, as HFSampler stops at them
                generation_config="vllm",
            )
        except (ValueError, RuntimeError) as error:
            raise JobFailed(
                f"vLLM could not start {source!r} beside the trainer: {error}. Set {SAMPLER_ENV}=hf to "
                "sample with Hugging Face generate instead"
            ) from error
        self._adapter_root = tempfile.TemporaryDirectory(prefix="rftlab-vllm-adapter-")
        self._adapter_version = 0
        self._adapter_key: tuple[tuple[int, int], ...] | None = None
        self._lora_request: Any = None

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Completion]]:
        from vllm.inputs import TokensPrompt

        lora_request = self._current_adapter()
        outputs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompts],
            self._sampling_params(len(prompts), params),
            use_tqdm=False,
            lora_request=lora_request,
        )
        yield [
            self._completion(index, prompts[index], output.outputs[0], params)
            for index, output in enumerate(outputs)
        ]

    def _sampling_params(self, count: int, params: SamplingParams) -> list[Any]:
        from vllm import SamplingParams as VLLMSamplingParams

        # greedy decoding draws nothing, so it takes no seed and leaves torch's generator where it was
        seeds = [None] * count if params.greedy else torch.randint(SEED_BOUND, (count,)).tolist()
        return [
            VLLMSamplingParams(
                temperature=params.temperature,  # 0 is vLLM's greedy decoding
                top_p=params.top_p,
                top_k=params.top_k,  # 0 turns top-k off in vLLM too
                max_tokens=params.max_output_tokens,
                stop=list(params.stop) or None,
                stop_token_ids=self.eos_ids,
                seed=seed,
                logprobs=0,  # the sampled token's only
            )
            for seed in seeds
        ]

    def _current_adapter(self) -> Any:
        """The LoRARequest for the policy's adapter as it is now: the previous one while no adapter tensor has
        changed since, as told by the tensors' storage and version counters (every in-place change, such as an
        optimizer step or a checkpoint restore, bumps them); else a new id and folder."""
        from vllm.lora.request import LoRARequest

        tensors = get_peft_model_state_dict(self.model, save_embedding_layers=False).values()
        key = tuple((tensor.data_ptr(), tensor._version) for tensor in tensors)
        if key == self._adapter_key:
            return self._lora_request
        previous = self._folder(self._adapter_version)
        self._adapter_version += 1
        folder = self._folder(self._adapter_version)
        save_adapter(self.model, folder)
        # vLLM loaded the previous version when it served it, and as it holds one adapter at a time (max_loras
        # 1) it never reads that folder again
        shutil.rmtree(previous, ignore_errors=True)
        self._adapter_key = key
        self._lora_request = LoRARequest(
            lora_name=f"policy-{self._adapter_version}",
            lora_int_id=self._adapter_version,
            lora_path=str(folder),
        )
        return self._lora_request

    def _folder(self, version: int) -> Path:
        return Path(self._adapter_root.name) / f"v{version:06d}"

    def _completion(
        self, index: int, prompt_ids: list[int], output: Any, params: SamplingParams
    ) -> Completion:
        ids = list(output.token_ids)
        logprobs = [step[token].logprob for step, token in zip(output.logprobs, ids, strict=True)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut_text = text_before_stop(text, params.stop)
        stopped = cut_text is not None or (bool(ids) and ids[-1] in self.eos_ids)
        return Completion(
            index,
            prompt_ids,
            ids,
            logprobs,
            text if cut_text is None else cut_text,
            "stop" if stopped else "length",
        )


def _vllm_missing() -> list[str]:
    """What keeps vLLM from running here, in words; empty when it can run."""
    missing = []
    if not torch.cuda.is_available():
        missing.append("torch sees no CUDA GPU")
    try:
        import vllm  # noqa: F401
    except ImportError:
        missing.append(f"vLLM is not installed ({VLLM_INSTALL})")
    return missing


def choose_sampler(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    base_model_name: str,
    lora_rank: int,
    max_model_len: int | None = None,
) -> Sampler:
    """`VLLMSampler` where vLLM is installed and a CUDA GPU is visible, else `HFSampler`; `$RFTLAB_SAMPLER`
    (hf or vllm) forces one. `max_model_len` goes to `VLLMSampler`."""
    choice = os.environ.get(SAMPLER_ENV, "").strip().lower()
    if choice not in ("", "hf", "vllm"):
        raise JobFailed(f"{SAMPLER_ENV}={choice!r}: use hf or vllm, or leave it unset to pick one")
    # without a GPU, an automatic choice need not import vLLM to know it cannot run
    if choice == "hf" or (not choice and not torch.cuda.is_available()):
        return HFSampler(model, tokenizer)
    missing = _vllm_missing()
    if not missing:
        source = resolve_model_source(base_model_name)
        return VLLMSampler(model, tokenizer, source, lora_rank, max_model_len)
    if choice == "vllm":
        raise JobFailed(f"{SAMPLER_ENV}=vllm, but {' and '.join(missing)}")
    return HFSampler(model, tokenizer)
