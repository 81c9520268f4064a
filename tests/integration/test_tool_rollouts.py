"""Multi-turn tool rollouts against a real MCP server on 127.0.0.1 (tests/integration/mcp_test_server.py).

The model's side is scripted (a `Sampler` that answers each transcript with a chosen reply, tokenized by a real
tokenizer), so each case sets exactly what the model says: tool calls, failing and unknown tools, malformed call
JSON, a call that outlives its timeout, a model that never stops calling, results and transcripts too long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from mcp_fixtures import mcp_server
from transformers import AutoTokenizer

from rftlab.engine.api import JobFailed
from rftlab.engine.rollout import Completion
from rftlab.engine.settings import SamplingParams, ToolSettings
from rftlab.engine.tool_rollout import ToolRollouts, parse_tool_calls
from rftlab.paths import ASSETS_DIR

TOOL_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\nTools:' }}{%- for tool in tools %}"
    "{{- ' ' + tool['function']['name'] }}{%- endfor %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_output_tokens=64)
ROW = {"messages": [{"role": "user", "content": "What is 2*3+4*5?"}]}


def call(name: str, **arguments) -> str:
    import json

    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


class ScriptedSampler:
    """Answers each transcript with `reply(transcript_text, turn)`, the tokens scored -0.5 each."""

    def __init__(self, tokenizer, reply: Callable[[str, int], str]):
        self.tokenizer, self.reply, self.prompts = tokenizer, reply, []

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> Iterator[list[Completion]]:
        completions = []
        for index, ids in enumerate(prompts):
            text = self.tokenizer.decode(ids)
            self.prompts.append(text)
            reply = self.reply(text, text.count("<|im_start|>assistant"))
            new = [*self.tokenizer.encode(reply, add_special_tokens=False), self.tokenizer.eos_token_id]
            completions.append(Completion(index, ids, new, [-0.5] * len(new), reply, "stop"))
        yield completions


@pytest.fixture(scope="module")
def tokenizer():
    loaded = AutoTokenizer.from_pretrained(ASSETS_DIR / "tiny-arith")
    loaded.chat_template = TOOL_TEMPLATE
    return loaded


@pytest.fixture(scope="module")
def mcp():
    with mcp_server() as running:
        yield running


def run(tokenizer, mcp, reply, rows=(ROW,), candidates=1, max_context=512, **settings):
    sampler = ScriptedSampler(tokenizer, reply)
    with ToolRollouts(tokenizer, ToolSettings(mcp.url, **settings), max_context) as tools:
        return tools.run(sampler, list(rows), candidates, PARAMS), sampler


def test_calls_run_results_come_back_in_order_and_only_the_models_tokens_are_trained(tokenizer, mcp):
    sessions_before = mcp.stats()["initialize"]

    def reply(text: str, turn: int) -> str:
        return call("multiply", a=2, b=3) + call("multiply", a=4, b=5) if turn == 1 else "26"

    rows = [ROW, {"messages": [{"role": "user", "content": "again"}]}]
    rollouts, sampler = run(tokenizer, mcp, reply, rows=rows, candidates=2)

    assert mcp.stats()["initialize"] - sessions_before == 4, "one MCP session per rollout"
    assert all(
        prompt.startswith("<|im_start|>system\nTools: multiply slow fail long_text")
        for prompt in sampler.prompts
    )
    assert [(r.row_index, r.candidate) for r in rollouts] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    rollout = rollouts[0]
    assert (rollout.turns, rollout.finish_reason, rollout.text) == (2, "stop", "26")
    assert [m["role"] for m in rollout.messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [m["content"] for m in rollout.messages[2:4]] == ["6", "20"]
    assert [c["function"]["name"] for c in rollout.messages[1]["tool_calls"]] == ["multiply", "multiply"]
    assert rollout.tool_use["tool_calls"] == 2 and rollout.tool_use["tool_errors"] == 0
    assert [tool["function"]["name"] for tool in rollout.tools] == ["multiply", "slow", "fail", "long_text"]

    # the transcript is the prompt, turn 1 (trained), the tool turns (not trained), turn 2 (trained)
    transcript = tokenizer.decode(rollout.prompt_ids + rollout.completion_ids)
    assert transcript.endswith(
        "<|im_start|>tool\n6<|im_end|>\n<|im_start|>tool\n20<|im_end|>\n<|im_start|>assistant\n26<|im_end|>"
    )
    trained = tokenizer.decode(
        [t for t, keep in zip(rollout.completion_ids, rollout.trained_mask, strict=True) if keep]
    )
    assert trained == call("multiply", a=2, b=3) + call("multiply", a=4, b=5) + "<|im_end|>26<|im_end|>"
    assert all(lp == 0.0 for lp, keep in zip(rollout.logprobs, rollout.trained_mask, strict=True) if not keep)
    # per message, as the rollout viewer shows it: each turn's tokens (its end-of-turn included), no tool result's
    turn_1, turn_2 = (len(tokenizer.encode(reply("", turn), add_special_tokens=False)) + 1 for turn in (1, 2))
    assert rollout.record(group=0)["trained_tokens"] == [None, turn_1, 0, 0, turn_2]
    # the glue is exactly what the template renders between the turns: the next turn sees a well-formed chat
    assert sampler.prompts[-1] == tokenizer.apply_chat_template(
        [
            *rows[1]["messages"],
            {"role": "assistant", "content": reply("", 1)},
            {"role": "tool", "content": "6"},
            {"role": "tool", "content": "20"},
        ],
        tools=[{"function": {"name": n}} for n in ("multiply", "slow", "fail", "long_text")],
        add_generation_prompt=True,
        tokenize=False,
    )


def test_failing_unknown_and_malformed_calls_are_fed_back_and_the_rollout_goes_on(tokenizer, mcp):
    def reply(text: str, turn: int) -> str:
        if turn > 1:
            return "done"
        return (
            call("fail", reason="boom")
            + call("nope")
            + '<tool_call>{"name": "multiply", "arguments": {"a": 1, "b": 2}</tool_call>'
            + call("multiply", a="x", b=1)
            + call("multiply", a=3, b=3)
        )

    (rollout,), _ = run(tokenizer, mcp, reply, max_context=4096)
    results = [m["content"] for m in rollout.messages if m["role"] == "tool"]
    assert results[0] == "Error calling tool fail: Error executing tool fail"  # the server's own error text
    assert results[1].startswith("Error calling tool nope: ") and "Unknown tool" in results[1]
    assert results[2].startswith("Error calling tool multiply: the call is not valid JSON")
    assert results[3].startswith("Error calling tool multiply: ") and "valid integer" in results[3]
    assert results[4] == "9"
    assert (rollout.tool_use["tool_calls"], rollout.tool_use["tool_errors"]) == (5, 4)
    assert (rollout.turns, rollout.text, rollout.finish_reason) == (2, "done", "stop")


def test_a_call_past_its_timeout_fails_without_holding_up_the_rollout(tokenizer, mcp):
    def reply(text: str, turn: int) -> str:
        return call("slow", seconds=20) + call("multiply", a=2, b=2) if turn == 1 else "4"

    started = time.perf_counter()
    (rollout,), _ = run(tokenizer, mcp, reply, call_timeout_s=1.0)
    assert time.perf_counter() - started < 15
    results = [m["content"] for m in rollout.messages if m["role"] == "tool"]
    assert results == ["Error calling tool slow: timed out after 1 s", "4"]
    assert rollout.text == "4"


def test_the_turn_cap_ends_a_rollout_that_never_stops_calling(tokenizer, mcp):
    (rollout,), sampler = run(tokenizer, mcp, lambda text, turn: call("multiply", a=turn, b=1), max_turns=3)
    assert (rollout.turns, rollout.finish_reason, rollout.tool_use["turn_capped"]) == (3, "turns", 1)
    assert rollout.tool_use["tool_calls"] == 2, "the capped turn's calls are not run"
    assert len(sampler.prompts) == 3


def test_long_results_are_cut_and_a_transcript_past_the_context_ends_counted(tokenizer, mcp):
    def reply(text: str, turn: int) -> str:
        return call("long_text", words=300) if turn == 1 else "ok"

    (rollout,), _ = run(tokenizer, mcp, reply, max_result_tokens=20)
    (result,) = [m["content"] for m in rollout.messages if m["role"] == "tool"]
    assert result.endswith(" ...[truncated]") and rollout.tool_use["tool_results_truncated"] == 1
    assert rollout.finish_reason == "stop"

    (short,), _ = run(tokenizer, mcp, reply, max_context=70, max_result_tokens=200)
    assert (short.finish_reason, short.tool_use["context_truncated"]) == ("length", 1)
    assert len(short.prompt_ids) + len(short.completion_ids) <= 70
    assert short.turns == 1
    # a result whose glue does not fit never reaches the model: no tokens of it in the transcript
    _, glue_start, glue_end = rollout.message_tokens[1]
    context = len(rollout.prompt_ids) + glue_end
    (cut,), _ = run(tokenizer, mcp, reply, max_context=context, max_result_tokens=20)
    assert [m["role"] for m in cut.messages] == ["user", "assistant", "tool"]
    assert (cut.finish_reason, cut.tool_use["context_truncated"]) == ("length", 1)
    assert cut.trained_tokens() == [None, glue_start, None]


def test_a_row_with_its_own_tools_uses_them_and_duplicate_names_are_refused(tokenizer, mcp):
    own = [{"type": "function", "function": {"name": "multiply", "description": "", "parameters": {}}}]
    _, sampler = run(tokenizer, mcp, lambda text, turn: "x", rows=[{**ROW, "tools": own}])
    assert sampler.prompts[0].startswith("<|im_start|>system\nTools: multiply<|im_end|>")
    with pytest.raises(JobFailed, match="multiply more than once"):
        run(tokenizer, mcp, lambda text, turn: "x", rows=[{**ROW, "tools": own * 2}])


def test_an_unreachable_server_fails_the_job_with_its_address(tokenizer):
    from server_harness import free_port

    url = f"http://127.0.0.1:{free_port()}/mcp"
    with ToolRollouts(tokenizer, ToolSettings(url), 512) as tools, pytest.raises(JobFailed, match=url):
        tools.run(ScriptedSampler(tokenizer, lambda text, turn: "x"), [ROW], 1, PARAMS)


def test_tool_calls_are_parsed_in_the_hermes_format():
    calls = parse_tool_calls(
        'a <tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call> <tool_call>[1]'
    )
    assert [(c.name, c.arguments, c.error) for c in calls] == [
        ("f", {"x": 1}, None),
        ("(unnamed)", None, 'the call must be a JSON object with a string "name"'),
    ]
