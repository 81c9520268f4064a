"""Answer one prompt with a base model and (optionally) a trained adapter: what `rftlab chat` runs. With an MCP
server's URL, the model may call its tools (as in a tool rollout) and the whole exchange is shown."""

from __future__ import annotations

from pathlib import Path

from peft import PeftConfig

from rftlab.engine.adapter import load_adapter
from rftlab.engine.api import JobFailed
from rftlab.engine.models import choose_placement, load_base_model
from rftlab.engine.rollout import HFSampler, render_prompt
from rftlab.engine.settings import SamplingParams, ToolSettings
from rftlab.engine.tool_rollout import ToolRollouts

CHAT_CONTEXT_TOKENS = 4096


def chat(
    prompt: str,
    adapter: Path | None = None,
    base_model: str | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    mcp_url: str | None = None,
) -> str:
    """The assistant's reply to `prompt` (greedy unless `temperature` > 0). Without `base_model`, the base
    model is the one the adapter was trained on (its adapter_config.json)."""
    if base_model is None:
        if adapter is None:
            raise ValueError("chat needs a base model, an adapter, or both")
        base_model = PeftConfig.from_pretrained(adapter).base_model_name_or_path
    model, tokenizer = load_base_model(base_model, choose_placement())
    if adapter is not None:
        try:
            model = load_adapter(model, adapter)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise JobFailed(
                f"the adapter at {adapter} does not load onto base model {base_model!r}: {error}. Pass the base "
                "model it was trained on with --base-model"
            ) from error
    row = {"messages": [{"role": "user", "content": prompt}]}
    params = SamplingParams(temperature, 1.0, 0, max_new_tokens)
    if mcp_url:
        with ToolRollouts(tokenizer, ToolSettings(mcp_url), CHAT_CONTEXT_TOKENS) as tools:
            [rollout] = tools.run(HFSampler(model, tokenizer), [row], 1, params)
        return exchange(rollout.messages[len(row["messages"]) :])
    [[completion]] = HFSampler(model, tokenizer).generate([render_prompt(tokenizer, row)], params)
    return completion.text


def exchange(messages: list[dict]) -> str:
    """A tool-using reply as text: each tool call, each tool result, then the answer."""
    lines = []
    for message in messages:
        for call in message.get("tool_calls", []):
            lines.append(f"[tool call] {call['function']['name']}({call['function']['arguments']})")
        if message["role"] == "tool":
            lines.append(f"[tool result] {message['content']}")
        elif message.get("content"):
            lines.append(message["content"])
    return "\n".join(lines)
