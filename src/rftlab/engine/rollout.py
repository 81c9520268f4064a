"""Sampling completions: chat-template rendering and batched generation with a KV cache.

`Sampler` is the seam between the engine and whatever generates: `HFSampler` runs Hugging Face `generate`
(batched, left-padded, KV cache) on the policy, or on a merged copy refreshed from it at every call for small
models on CPU (merged.py), so the weights it samples with are always current.
Each completion keeps its token ids and their log-probabilities under the sampling temperature (before top-k /
top-p truncation), which the update uses as the old policy's log-probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from peft import PeftModel
from transformers import DynamicCache, GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from rftlab.engine.adapter import MergedCopy, merges_for_sampling
from rftlab.engine.evaluator import Score
from rftlab.engine.models import declared_eos_ids
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


@dataclass
class Rollout:
    """One sampled answer to one row, from its prompt to its score: the unit every later step works on.

    `completion_ids` are every token after the prompt. In a single-turn rollout all of them are the model's; a
    multi-turn (tool-using) rollout also holds the tool results and chat-template glue between its turns, which
    `trained_mask` marks False (not trained on; their `logprobs` are 0).
    """

    row_index: int
    """Index of its row in the rows of its round."""
    candidate: int
    """Its place in its group (the K rollouts of one row)."""
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    trained_mask: list[bool]
    messages: list[dict[str, Any]]
    """The conversation the evaluator scores: the row's messages plus what the rollout added."""
    text: str
    """The final assistant reply."""
    finish_reason: str
    """"stop" (an end-of-sequence id or a stop string), "length" (max output tokens) or "turns" (turn cap)."""
    turns: int = 1
    tool_use: dict[str, float] = field(default_factory=dict)
    """A tool rollout's counts: tool_calls, tool_errors, tool_seconds, turn_capped, context_truncated,
    tool_results_truncated (empty for a single-turn rollout)."""
    tools: list[dict[str, Any]] | None = None
    """The function tools a tool rollout offered the model; the evaluator receives them as `tools`."""
    message_tokens: list[tuple[int, int, int]] | None = None
    """Where the messages the rollout added lie in `completion_ids`: (index in `messages`, start, end). The tool
    messages of one turn share the chat-template glue that carries them. None: a single turn, whose reply (the
    last message) is all of `completion_ids`."""
    score: Score = field(default_factory=lambda: Score(None, error="not scored"))
    advantage: float | None = None
    """Group-relative advantage; None when its group carries no signal (or it is invalid)."""

    @classmethod
    def single_turn(
        cls, completion: Completion, row: dict[str, Any], row_index: int, candidate: int
    ) -> Rollout:
        return cls(
            row_index=row_index,
            candidate=candidate,
            prompt_ids=completion.prompt_ids,
            completion_ids=completion.completion_ids,
            logprobs=completion.logprobs,
            trained_mask=[True] * len(completion.completion_ids),
            messages=[*row["messages"], {"role": "assistant", "content": completion.text}],
            text=completion.text,
            finish_reason=completion.finish_reason,
        )

    def record(self, group: int) -> dict[str, Any]:
        """What the run keeps of it (JSON-ready): for the rollout viewer and W&B tables."""
        return {
            "row_index": self.row_index,
            "group": group,
            "candidate": self.candidate,
            "messages": self.messages,
            "completion_text": self.text,
            "trained_tokens": self.trained_tokens(),
            "reward": self.score.value,
            "valid": self.score.valid,
            "reason": self.score.reason,
            "error": self.score.error,
            "metrics": self.score.metrics,
            "finish_reason": self.finish_reason,
            "turns": self.turns,
            **self.tool_use,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.completion_ids),
            "advantage": self.advantage,
        }

    def trained_tokens(self) -> list[int | None]:
        """For each of `messages`, how many of its tokens the update trains on (`trained_mask`): None for the
        row's own messages (the prompt, never trained on), 0 for tool results, the turn's tokens for each of the
        model's turns."""
        placed = self.message_tokens
        if placed is None:
            placed = [(len(self.messages) - 1, 0, len(self.completion_ids))]
        counts: list[int | None] = [None] * len(self.messages)
        for index, start, end in placed:
            counts[index] = (counts[index] or 0) + sum(self.trained_mask[start:end])
        return counts


def render_prompt(tokenizer: PreTrainedTokenizerBase, row: dict[str, Any]) -> list[int]:
    text = tokenizer.apply_chat_template(
        row["messages"], tools=row.get("tools"), add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


def text_before_stop(text: str, stops: tuple[str, ...]) -> str | None:
    """`text` up to the first stop string it holds (the evaluator does not see the stop string, as with
    OpenAI-style APIs), or None when it holds none."""
    hits = [text.find(stop) for stop in stops if stop in text]
    return text[: min(hits)] if hits else None


class Sampler(Protocol):
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Completion]]:
        """Completions for `prompts` (token ids), yielded batch by batch as each batch finishes."""


class HFSampler:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64):
        self.policy, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos_ids = declared_eos_ids(model, tokenizer)
        # generate fills every knob left at its global default from the model's generation_config (Qwen's top_p
        # 0.8 and repetition penalty, for one): the sampler's distribution must be the job's alone
        generating = model.get_base_model() if isinstance(model, PeftModel) else model
        generating.generation_config = GenerationConfig(
            eos_token_id=self.eos_ids, pad_token_id=tokenizer.pad_token_id
        )
        self._merged = MergedCopy(model) if merges_for_sampling(model) else None

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Completion]]:
        model = self.policy if self._merged is None else self._merged.refresh()
        for start in range(0, len(prompts), self.batch_size):
            yield self._generate_batch(model, prompts[start : start + self.batch_size], start, params)

    @torch.no_grad()
    def _generate_batch(
        self, model: PreTrainedModel, prompts: list[list[int]], offset: int, params: SamplingParams
    ) -> list[Completion]:
        device = model.device
        width = max(len(ids) for ids in prompts)
        pad_id = self.tokenizer.pad_token_id
        input_ids_B_P = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask_B_P = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, ids in enumerate(prompts):
            input_ids_B_P[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask_B_P[i, width - len(ids) :] = 1
        sampling = (
            {"do_sample": False}
            if params.greedy
            else {
                "do_sample": True,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": params.top_k,
            }
        )
        was_training = model.training
        model.eval()
        output = model.generate(
            input_ids=input_ids_B_P.to(device),
            attention_mask=attention_mask_B_P.to(device),
            cache=self._shared_prompt_cache(
                model, prompts, input_ids_B_P.to(device), attention_mask_B_P.to(device)
            ),
            max_new_tokens=params.max_output_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=pad_id,
            stop_strings=list(params.stop) or None,
            tokenizer=self.tokenizer if params.stop else None,
            output_logits=True,
            return_dict_in_generate=True,
            **sampling,
        )
        model.train(was_training)
        new_ids_B_T = output.sequences[:, width:]
        temperature = 1.0 if params.greedy else params.temperature
        # one step at a time: B x V floats at once instead of B x T x V (a 150k vocabulary makes that gigabytes)
        logprobs_B_T = torch.stack(
            [
                torch.log_softmax(logits_B_V.float() / temperature, dim=-1)
                .gather(-1, new_ids_B_T[:, t : t + 1])
                .squeeze(-1)
                for t, logits_B_V in enumerate(output.logits)
            ],
            dim=1,
        ).cpu()
        new_ids_B_T = new_ids_B_T.cpu()
        return [
            self._finish(offset + i, prompts[i], new_ids_B_T[i].tolist(), logprobs_B_T[i].tolist(), params)
            for i in range(len(prompts))
        ]

    @staticmethod
    def _shared_prompt_cache(
        model: PreTrainedModel,
        prompts: list[list[int]],
        input_ids_B_P: torch.Tensor,
        attention_mask_B_P: torch.Tensor,
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
        cache = DynamicCache(config=model.config)
        model(
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
        """Cut the generated tokens at the first end-of-sequence id (kept: the model learns to stop) or after a
        stop string."""
        for end, token in enumerate(new_ids, start=1):
            if token in self.eos_ids:
                kept = new_ids[:end]
                return Completion(index, prompt_ids, kept, logprobs[:end], self._text(kept), "stop")
            if params.stop:
                text = text_before_stop(self._text(new_ids[:end]), params.stop)
                if text is not None:
                    return Completion(index, prompt_ids, new_ids[:end], logprobs[:end], text, "stop")
        return Completion(index, prompt_ids, new_ids, logprobs, self._text(new_ids), "length")

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)
