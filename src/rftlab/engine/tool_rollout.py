"""Multi-turn tool rollouts: the model calls an MCP server's tools until it answers.

Each rollout gets a fresh MCP session; its tools reach the chat template's `tools=` (unless the row carries its own
`tools`). Every turn, the `Sampler` continues all unfinished transcripts at once (so the Hugging Face and vLLM
samplers both serve); the tool calls in each reply (Hermes/Qwen `<tool_call>{json}</tool_call>`) run concurrently
and their results come back as `tool` messages in call order. A failing call, an unknown tool or malformed call
JSON becomes the tool text `Error calling tool NAME: ...` and the rollout goes on.

The transcript is one token sequence: the prompt, then the model's tokens and, between turns, the chat template's
glue around the tool results, which `Rollout.trained_mask` marks False. A rollout ends when a reply calls no tool,
at the turn cap (finish "turns"), or when the transcript reaches the context length (finish "length", counted).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from rftlab.engine.api import JobFailed
from rftlab.engine.mcp_client import McpClient, McpSession, ToolCall, ToolResult
from rftlab.engine.rollout import Completion, Rollout, Sampler
from rftlab.engine.settings import SamplingParams, ToolSettings

TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
CALL_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
TRUNCATED_NOTE = " ...[truncated]"


@dataclass(frozen=True)
class ParsedCall:
    """One `<tool_call>` of a reply: a call to make, or the error to feed back instead."""

    name: str
    arguments: dict[str, Any] | None
    error: str | None = None


def parse_tool_calls(text: str) -> list[ParsedCall]:
    """The tool calls of a reply in Hermes/Qwen format, in order; malformed ones carry their error."""
    calls = []
    for match in TOOL_CALL.finditer(text):
        body = match.group(1).strip()
        named = CALL_NAME.search(body)
        name = named.group(1) if named else "(unnamed)"
        try:
            call = json.loads(body)
        except json.JSONDecodeError as error:
            calls.append(
                ParsedCall(name, None, f"the call is not valid JSON ({error.msg} at char {error.pos})")
            )
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            calls.append(ParsedCall(name, None, 'the call must be a JSON object with a string "name"'))
            continue
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):
            with contextlib.suppress(json.JSONDecodeError):
                arguments = json.loads(arguments)
        if not isinstance(arguments, dict):
            calls.append(ParsedCall(call["name"], None, '"arguments" must be a JSON object'))
            continue
        calls.append(ParsedCall(call["name"], arguments))
    return calls


def reply_content(text: str) -> str:
    """A reply's text without its tool calls (what the evaluator sees as the assistant's content)."""
    return TOOL_CALL.sub("", text).strip()


def check_tool_names(tools: list[dict[str, Any]]) -> None:
    names = [tool["function"]["name"] for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise JobFailed(f"the MCP server lists tool name(s) {', '.join(duplicates)} more than once")


@dataclass(eq=False)
class Transcript:
    """One rollout in progress."""

    row_index: int
    candidate: int
    session: McpSession
    tools: list[dict[str, Any]]
    template_messages: list[dict[str, Any]]
    """What the chat template renders: assistant turns as the model wrote them."""
    messages: list[dict[str, Any]]
    """What the evaluator scores: assistant turns with structured `tool_calls`, then `tool` messages."""
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    trained_mask: list[bool] = field(default_factory=list)
    message_tokens: list[tuple[int, int, int]] = field(default_factory=list)
    text: str = ""
    finish_reason: str = ""
    turns: int = 0
    use: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "tool_calls",
                "tool_errors",
                "tool_seconds",
                "turn_capped",
                "context_truncated",
                "tool_results_truncated",
            ),
            0,
        )
    )

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    def rollout(self) -> Rollout:
        return Rollout(
            row_index=self.row_index,
            candidate=self.candidate,
            prompt_ids=self.prompt_ids,
            completion_ids=self.completion_ids,
            logprobs=self.logprobs,
            trained_mask=self.trained_mask,
            messages=self.messages,
            text=self.text,
            finish_reason=self.finish_reason,
            turns=self.turns,
            tool_use=self.use,
            tools=self.tools,
            message_tokens=self.message_tokens,
        )


class ToolRollouts:
    """Multi-turn rollouts for a job whose settings name an MCP server."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: ToolSettings, max_context_length: int):
        self.tokenizer, self.settings, self.max_context = tokenizer, settings, max_context_length
        self.client = McpClient(settings.endpoint_url, settings.headers, settings.call_timeout_s)

    def close(self) -> None:
        self.client.shutdown()

    def __enter__(self) -> ToolRollouts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, sampler: Sampler, rows: list[dict[str, Any]], candidates: int, params: SamplingParams
    ) -> list[Rollout]:
        """`candidates` finished rollouts per row, in row order."""
        try:
            sessions = self.client.open(len(rows) * candidates)
        except ConnectionError as error:
            raise JobFailed(str(error)) from None
        try:
            transcripts = [
                self._start(rows[i // candidates], *divmod(i, candidates), session)
                for i, session in enumerate(sessions)
            ]
            active = transcripts
            while active:
                completions = [
                    c
                    for batch in sampler.generate([t.prompt_ids + t.completion_ids for t in active], params)
                    for c in batch
                ]
                calls = {}
                for completion in completions:
                    transcript = active[completion.prompt_index]
                    parsed = self._take_turn(transcript, completion)
                    if parsed:
                        calls[completion.prompt_index] = parsed
                results = self._run_calls({active[i]: c for i, c in calls.items()})
                for transcript, (parsed, turn_results) in results.items():
                    self._add_results(transcript, parsed, turn_results)
                active = [t for t in active if not t.finish_reason]
        finally:
            self.client.close_all(sessions)
        return [t.rollout() for t in transcripts]

    def _start(self, row: dict[str, Any], row_index: int, candidate: int, session: McpSession) -> Transcript:
        tools = row.get("tools") or session.tools
        check_tool_names(tools)
        messages = list(row["messages"])
        text = self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
        return Transcript(
            row_index,
            candidate,
            session,
            tools,
            list(messages),
            list(messages),
            self.tokenizer.encode(text, add_special_tokens=False),
        )

    def _take_turn(self, transcript: Transcript, completion: Completion) -> list[ParsedCall]:
        """Add one reply to the transcript; the calls to run before the next turn (none: the rollout ended)."""
        room = self.max_context - transcript.length
        ids, logprobs, finish = completion.completion_ids, completion.logprobs, completion.finish_reason
        if len(ids) > room:
            ids, logprobs, finish = ids[:room], logprobs[:room], "length"
            transcript.use["context_truncated"] = 1
        text = completion.text if finish == completion.finish_reason else self._decode(ids)
        start = len(transcript.completion_ids)
        transcript.completion_ids += ids
        transcript.logprobs += logprobs
        transcript.trained_mask += [True] * len(ids)
        transcript.turns += 1
        transcript.text = reply_content(text)
        parsed = parse_tool_calls(text) if finish == "stop" else []
        transcript.template_messages.append({"role": "assistant", "content": text})
        assistant: dict[str, Any] = {"role": "assistant", "content": transcript.text}
        if parsed:
            assistant["tool_calls"] = [
                {
                    "id": f"call_{transcript.turns}_{i}",
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments or {})},
                }
                for i, call in enumerate(parsed)
            ]
        transcript.messages.append(assistant)
        transcript.message_tokens.append((len(transcript.messages) - 1, start, start + len(ids)))
        if not parsed:
            transcript.finish_reason = finish
            return []
        if transcript.turns >= self.settings.max_turns:
            transcript.finish_reason, transcript.use["turn_capped"] = "turns", 1
            return []
        return parsed

    def _run_calls(
        self, calls: dict[Transcript, list[ParsedCall]]
    ) -> dict[Transcript, tuple[list[ParsedCall], list[ToolResult]]]:
        """Every transcript's calls of this turn, all sessions at once; malformed calls are answered here."""
        futures = {
            transcript: transcript.session.call(
                [ToolCall(c.name, c.arguments) for c in parsed if c.error is None]
            )
            for transcript, parsed in calls.items()
        }
        results = {}
        for transcript, parsed in calls.items():
            try:
                made = iter(futures[transcript].result())
            except ConnectionError as error:
                made = iter([ToolResult(str(error), True, 0.0)] * len(parsed))
            results[transcript] = (
                parsed,
                [ToolResult(c.error, True, 0.0) if c.error is not None else next(made) for c in parsed],
            )
        return results

    def _add_results(
        self, transcript: Transcript, parsed: list[ParsedCall], results: list[ToolResult]
    ) -> None:
        tool_messages = []
        for i, (call, result) in enumerate(zip(parsed, results, strict=True)):
            text = self._cap(transcript, result.text)
            if result.is_error:
                text = f"Error calling tool {call.name}: {text}"
            transcript.use["tool_calls"] += 1
            transcript.use["tool_errors"] += result.is_error
            tool_messages.append(
                {
                    "role": "tool",
                    "tool_call_id": f"call_{transcript.turns}_{i}",
                    "name": call.name,
                    "content": text,
                }
            )
        transcript.use["tool_seconds"] += max((r.seconds for r in results), default=0.0)
        glue = self._glue(transcript, tool_messages)
        transcript.template_messages += tool_messages
        transcript.messages += tool_messages
        if transcript.length + len(glue) >= self.max_context:
            transcript.finish_reason, transcript.use["context_truncated"] = "length", 1
            return
        start = len(transcript.completion_ids)
        transcript.message_tokens += [
            (index, start, start + len(glue))
            for index in range(len(transcript.messages) - len(tool_messages), len(transcript.messages))
        ]
        transcript.completion_ids += glue
        transcript.logprobs += [0.0] * len(glue)
        transcript.trained_mask += [False] * len(glue)

    def _glue(self, transcript: Transcript, tool_messages: list[dict[str, Any]]) -> list[int]:
        """The tokens between the model's last token and its next turn: the end of its reply as the template
        writes it (after the end-of-turn token the model produced), the tool messages, the generation prompt."""
        render = self.tokenizer.apply_chat_template
        before = render(transcript.template_messages, tools=transcript.tools, tokenize=False)
        after = render(
            transcript.template_messages + tool_messages,
            tools=transcript.tools,
            add_generation_prompt=True,
            tokenize=False,
        )
        if not after.startswith(before):
            raise JobFailed(
                "the chat template renders earlier turns differently once tool results follow them"
            )
        eos = self.tokenizer.eos_token or ""
        ended = eos and self._decode(transcript.completion_ids[-1:], skip_special=False) == eos
        reply = transcript.template_messages[-1]["content"]
        cut = before.rindex(eos) + len(eos) if ended and eos in before else before.rindex(reply) + len(reply)
        return self.tokenizer.encode(before[cut:] + after[len(before) :], add_special_tokens=False)

    def _cap(self, transcript: Transcript, text: str) -> str:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if len(ids) <= self.settings.max_result_tokens:
            return text
        transcript.use["tool_results_truncated"] += 1
        return self._decode(ids[: self.settings.max_result_tokens]) + TRUNCATED_NOTE

    def _decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)
