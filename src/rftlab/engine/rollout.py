"""Sampling completions: chat-template rendering and batched generation with a KV cache.

`Sampler` is the seam between the engine and whatever generates: `HFSampler` decodes token by token on the
policy itself (batched, left-padded, KV cache), so the weights it samples with are always current, and hands
out completions as they finish, so the evaluator scores them while the rest generate.
Each completion keeps its token ids and their log-probabilities under the sampling temperature (before top-k /
top-p truncation), which the update uses as the old policy's log-probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import (
    DynamicCache,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rftlab.engine.settings import SamplingParams


@dataclass
class Completion:
    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    """"stop" (eos or a stop string) or "length"."""


def render_prompt(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> list[int]:
    text = tokenizer.apply_chat_template(
        row["messages"], tools=row.get("tools"), add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


class Sampler(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Completion]]:
        """Completions for `prompts` (token ids), yielded a few at a time as they finish (not necessarily in
        prompt order: each carries its `prompt_index`), so their scoring can start while the rest generate."""


class HFSampler:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Completion]]:
        for start in range(0, len(prompts), self.batch_size):
            yield from self._generate_batch(prompts[start : start + self.batch_size], start, params)

    @torch.no_grad()
    def _generate_batch(
        self, prompts: list[list[int]], offset: int, params: SamplingParams
    ) -> Iterator[list[Completion]]:
        device = self.model.device
        width = max(len(ids) for ids in prompts)
        pad_id = self.tokenizer.pad_token_id
        input_ids_B_P = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask_B_P = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):
            input_ids_B_P[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask_B_P[i, width - len(ids) :] = 1
        was_training = self.model.training
        self.model.eval()
        try:
            for rows, new_ids_B_T, logprobs_B_T in self._decode(
                prompts, input_ids_B_P.to(device), attention_mask_B_P.to(device), params
            ):
                yield [
                    self._finish(
                        offset + i, prompts[i], new_ids_B_T[i].tolist(), logprobs_B_T[i].tolist(), params
                    )
                    for i in rows
                ]
        finally:
            self.model.train(was_training)

    def _decode(
        self,
        prompts: list[list[int]],
        input_ids_B_P: torch.Tensor,
        attention_mask_B_P: torch.Tensor,
        params: SamplingParams,
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Token-by-token decoding with a KV cache, choosing tokens as Hugging Face `generate` does: the same
        warpers in the same order and `torch.multinomial` over every row of the batch, so a seed draws the same
        tokens. Unlike `generate`, the model only runs the rows still going (A of the batch's B): on CPU,
        `multinomial` draws one number per row whatever its probabilities, so finished rows get a uniform
        placeholder and the live rows' draws stay the same. Finished rows continue with pad tokens; the loop
        ends when every row has hit eos or a stop string, or at `max_output_tokens`. Yields the rows that have
        just finished with the new token ids and their log-probabilities under the temperature so far."""
        eos, pad_id = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        temperature = 1.0 if params.greedy else params.temperature
        warpers = self._warpers(params)
        cache = self._shared_prompt_cache(prompts, input_ids_B_P, attention_mask_B_P)
        step_ids_A_S = input_ids_B_P if cache is None else input_ids_B_P[:, -1:]
        if cache is None:
            cache = DynamicCache(config=self.model.config)
        mask_A_L = attention_mask_B_P
        positions_A_L = (mask_A_L.cumsum(-1) - 1).masked_fill(mask_A_L == 0, 1)
        rows_A = torch.arange(len(prompts), device=input_ids_B_P.device)
        unfinished_B = torch.ones(len(prompts), dtype=torch.bool, device=input_ids_B_P.device)
        new_ids, logprobs = [], []
        for _ in range(params.max_output_tokens):
            logits_A_V = (
                self.model(
                    input_ids=step_ids_A_S,
                    attention_mask=mask_A_L,
                    position_ids=positions_A_L[:, -step_ids_A_S.shape[1] :],
                    cache=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                .logits[:, -1]
                .float()
            )
            logits_B_V = logits_A_V.new_zeros((len(prompts), logits_A_V.shape[-1]))
            logits_B_V[rows_A] = logits_A_V
            if params.greedy:
                next_B = logits_B_V.argmax(-1)
            else:
                scores_B_V = warpers(None, logits_B_V.clone())
                next_B = torch.multinomial(torch.softmax(scores_B_V, dim=-1), num_samples=1).squeeze(1)
            next_B = next_B.masked_fill(~unfinished_B, pad_id)
            new_ids.append(next_B)
            logprobs.append(
                torch.log_softmax(logits_B_V / temperature, dim=-1).gather(-1, next_B[:, None]).squeeze(-1)
            )
            unfinished_B &= next_B != eos
            if params.stop:
                unfinished_B &= ~self._hit_stop(torch.stack(new_ids, dim=1), params.stop)
            going_A = unfinished_B[rows_A]
            if not going_A.all():
                yield rows_A[~going_A].tolist(), *self._stacked(new_ids, logprobs)
                if not going_A.any():
                    return
                kept_A = going_A.nonzero().squeeze(1)
                cache.batch_select_indices(kept_A)
                rows_A, mask_A_L, positions_A_L = rows_A[kept_A], mask_A_L[kept_A], positions_A_L[kept_A]
            step_ids_A_S = next_B[rows_A, None]
            mask_A_L = torch.cat([mask_A_L, mask_A_L.new_ones((len(rows_A), 1))], dim=-1)
            positions_A_L = torch.cat([positions_A_L, positions_A_L[:, -1:] + 1], dim=-1)
        yield rows_A.tolist(), *self._stacked(new_ids, logprobs)

    @staticmethod
    def _stacked(
        new_ids: list[torch.Tensor], logprobs: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack(new_ids, dim=1).cpu(), torch.stack(logprobs, dim=1).cpu()

    @staticmethod
    def _warpers(params: SamplingParams) -> LogitsProcessorList:
        """The sampling warpers `generate` would apply, in its order and under its conditions."""
        warpers = LogitsProcessorList()
        if params.greedy:
            return warpers
        if params.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k:
            warpers.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=params.top_p))
        return warpers

    def _hit_stop(self, new_ids_B_T: torch.Tensor, stop: tuple[str, ...]) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(new_ids_B_T.tolist(), skip_special_tokens=True)
        return torch.tensor([any(s in text for s in stop) for text in texts], device=new_ids_B_T.device)

    def _shared_prompt_cache(
        self, prompts: list[list[int]], input_ids_B_P: torch.Tensor, attention_mask_B_P: torch.Tensor
    ) -> DynamicCache | None:
        """The KV cache of every prompt but its last token, computed once per distinct prompt and repeated for
        its copies (a group's K rollouts share one prompt), so `generate` only runs each row's last prompt token
        and the new ones; None (`generate` runs the whole prompts) when no prompt repeats."""
        first_row: dict[tuple[int, ...], int] = {}
        for row, ids in enumerate(prompts):
            first_row.setdefault(tuple(ids), row)
        if len(first_row) == len(prompts) or input_ids_B_P.shape[1] < 2:
            return None
        distinct_index = {key: index for index, key in enumerate(first_row)}
        distinct_of_B = torch.tensor(
            [distinct_index[tuple(ids)] for ids in prompts], device=input_ids_B_P.device
        )
        rows_U = list(first_row.values())
        mask_U_P = attention_mask_B_P[rows_U, :-1]
        cache = DynamicCache(config=self.model.config)
        self.model(
            input_ids=input_ids_B_P[rows_U, :-1],
            attention_mask=mask_U_P,
            position_ids=(mask_U_P.cumsum(-1) - 1).clamp(min=0),
            cache=cache,
            use_cache=True,
        )
        cache.batch_select_indices(distinct_of_B)
        return cache

    def _finish(
        self,
        index: int,
        prompt_ids: list[int],
        new_ids: list[int],
        logprobs: list[float],
        params: SamplingParams,
    ) -> Completion:
        """Cut the generated tokens at eos (kept: the model learns to stop) or after a stop string (the text
        the evaluator sees leaves the stop string out, as OpenAI-style APIs do)."""
        eos = self.tokenizer.eos_token_id
        for end, token in enumerate(new_ids, start=1):
            if token == eos:
                kept = new_ids[:end]
                return Completion(index, prompt_ids, kept, logprobs[:end], self._text(kept), "stop")
            if params.stop:
                text = self._text(new_ids[:end])
                hits = [text.find(stop) for stop in params.stop if stop in text]
                if hits:
                    return Completion(
                        index, prompt_ids, new_ids[:end], logprobs[:end], text[: min(hits)], "stop"
                    )
        return Completion(index, prompt_ids, new_ids, logprobs, self._text(new_ids), "length")

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
