"""Build the bundled `tiny-calculator` model and the `mcp_calculator` dataset, offline and deterministically.

    python scripts/build_tiny_calculator.py [--out DIR] [--dataset-out FILE] [--seed N]

A sibling of build_tiny_arith.py (same tokenizer recipe and model shape) for the MCP tool demo: three-digit
multiplication, which a model this small cannot do in its head, with a `multiply` tool served by the bundled MCP
calculator (src/rftlab/assets/mcp_calculator/server.py).

1. Trains a byte-level BPE tokenizer (digits one per token) whose chat template lists the tools in a system turn
   and renders `tool` messages, in the Hermes/Qwen tool-call format: `<tool_call>{json}</tool_call>`.
2. Pre-trains on whole tool transcripts drawn from a deliberate mix of behaviours: a correct call then the
   result copied (CORRECT), a call with the first number twice (WRONG_ARGS), a call with broken JSON (MALFORMED:
   the error comes back and the model guesses), and a guess without any call (GUESS). So the model starts out
   calling the tool sometimes and often badly, and reinforcement fine-tuning has a behaviour to find.
3. Writes the model folder (with a README of the measured rates) and the dataset: held-out pairs only.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_tiny_arith import IM_END, IM_START, PAD, build_model, train_bpe
from rftlab.engine.tool_rollout import parse_tool_calls

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "src/rftlab/assets/tiny-calculator"
DEFAULT_DATASET = REPO_ROOT / "src/rftlab/assets/mcp_calculator/train.jsonl"
TOOL_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\nTools:' }}{%- for tool in tools %}{{- ' ' + tool['function']['name'] }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "multiply", "description": "a * b", "parameters": {}}}]
BEHAVIOURS = {"CORRECT": 0.25, "WRONG_ARGS": 0.2, "MALFORMED": 0.15, "GUESS": 0.4}
VOCAB_SIZE = 400
DATASET_ROWS = 2000
EVAL_PROMPTS = 128


def question(a: int, b: int) -> str:
    return f"What is {a}*{b}?"


def call_text(a: int, b: int, malformed: bool = False) -> str:
    body = json.dumps({"name": "multiply", "arguments": {"a": a, "b": b}})
    return f"<tool_call>{body[:-1] if malformed else body}</tool_call>"


def guess(rng: random.Random, a: int, b: int) -> str:
    return str(max(10_000, a * b + rng.randint(-20_000, 20_000)))


def transcript(rng: random.Random, a: int, b: int, behaviour: str) -> list[tuple[str, bool]]:
    """(text, trained) pieces after the prompt: the model's turns and the tool turns between them, as the
    engine's tool rollout lays them out."""
    if behaviour == "GUESS":
        return [(guess(rng, a, b), True)]
    first = call_text(a, a if behaviour == "WRONG_ARGS" else b, malformed=behaviour == "MALFORMED")
    if behaviour == "MALFORMED":
        result, answer = f"Error calling tool multiply: {parse_tool_calls(first)[0].error}", guess(rng, a, b)
    else:
        result = str(a * (a if behaviour == "WRONG_ARGS" else b))
        answer = result
    glue = f"\n{IM_START}tool\n{result}{IM_END}\n{IM_START}assistant\n"
    return [(first, True), (glue, False), (answer, True)]


def split_pairs(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    rng = random.Random(seed)
    pairs = list({(rng.randint(100, 999), rng.randint(100, 999)) for _ in range(60_000)})
    pairs.sort()
    rng.shuffle(pairs)
    return pairs[DATASET_ROWS:], pairs[:DATASET_ROWS]


def prompt_text(tokenizer, a: int, b: int) -> str:
    messages = [{"role": "user", "content": question(a, b)}]
    return tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=True)


def train_tokenizer(seed: int) -> PreTrainedTokenizerFast:
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        behaviour = rng.choice(list(BEHAVIOURS))
        pieces = "".join(text for text, _ in transcript(rng, a, b, behaviour))
        lines.append(
            f"{IM_START}system\nTools: multiply{IM_END}\n{IM_START}user\n{question(a, b)}{IM_END}\n"
            f"{IM_START}assistant\n{pieces}{IM_END}\n"
        )
    tokenizer = train_bpe(lines, VOCAB_SIZE)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        chat_template=TOOL_TEMPLATE,
        model_max_length=512,
    )


def encode_example(
    tokenizer, rng: random.Random, a: int, b: int, behaviour: str
) -> tuple[list[int], list[int]]:
    ids = tokenizer.encode(prompt_text(tokenizer, a, b), add_special_tokens=False)
    labels = [-100] * len(ids)
    for text, trained in transcript(rng, a, b, behaviour):
        piece = tokenizer.encode(text, add_special_tokens=False)
        if trained:
            piece.append(tokenizer.eos_token_id)
        ids += piece
        labels += piece if trained else [-100] * len(piece)
    return ids, labels


def batch(tokenizer, rng: random.Random, pairs: list[tuple[int, int]], size: int):
    names, weights = list(BEHAVIOURS), list(BEHAVIOURS.values())
    rows = [
        encode_example(tokenizer, rng, *rng.choice(pairs), rng.choices(names, weights)[0])
        for _ in range(size)
    ]
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((size, width), tokenizer.pad_token_id)
    attention = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width), -100)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor(row_labels)
    return input_ids, attention, labels


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[str], max_new: int) -> list[str]:
    tokenizer.padding_side = "left"
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        **encoded,
        max_new_tokens=max_new,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


def skills(model, tokenizer, pairs: list[tuple[int, int]]) -> dict[str, float]:
    """Greedy: a tool result copied as the answer."""
    model.eval()
    copy_prompts = [
        prompt_text(tokenizer, a, b) + call_text(a, b) + f"{IM_END}\n{IM_START}tool\n{a * b}{IM_END}\n"
        f"{IM_START}assistant\n"
        for a, b in pairs
    ]
    copies = greedy(model, tokenizer, copy_prompts, 10)
    return {
        "copy": sum(c.strip() == str(a * b) for c, (a, b) in zip(copies, pairs, strict=True)) / len(pairs)
    }


@torch.no_grad()
def first_turns(model, tokenizer, pairs: list[tuple[int, int]]) -> dict[str, float]:
    """Sampled at temperature 1: the share of first replies of each kind."""
    model.eval()
    tokenizer.padding_side = "left"
    prompts = [prompt_text(tokenizer, a, b) for a, b in pairs]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(
        **encoded,
        max_new_tokens=40,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    replies = tokenizer.batch_decode(out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    kinds = dict.fromkeys(("correct call", "call with other arguments", "malformed call", "no call"), 0)
    for reply, (a, b) in zip(replies, pairs, strict=True):
        calls = parse_tool_calls(reply)
        if not calls:
            kinds["no call"] += 1
        elif calls[0].error:
            kinds["malformed call"] += 1
        elif calls[0].arguments == {"a": a, "b": b}:
            kinds["correct call"] += 1
        else:
            kinds["call with other arguments"] += 1
    return {kind: count / len(pairs) for kind, count in kinds.items()}


def pretrain(model, tokenizer, train_pairs, eval_pairs, seed: int, max_steps: int, batch_size: int = 32):
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    warmup = 50
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)),
    )
    started = time.perf_counter()
    measured = {}
    for step in range(1, max_steps + 1):
        model.train()
        input_ids, attention, labels = batch(tokenizer, rng, train_pairs, batch_size)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50:
            continue
        measured = skills(model, tokenizer, eval_pairs[:16])
        seconds = time.perf_counter() - started
        print(f"step {step:5d}  loss {loss.item():.3f}  {measured}  {seconds:.0f}s", flush=True)
        if measured["copy"] >= 0.95:
            break
    return step, measured, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--dataset-out", type=Path, default=DEFAULT_DATASET)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args()

    torch.set_num_threads(1)  # a busy machine: one thread wastes nothing waiting on the other
    torch.manual_seed(args.seed)
    train_pairs, held_out = split_pairs(args.seed)
    tokenizer = train_tokenizer(args.seed)
    model = build_model(tokenizer, hidden=96, intermediate=256, layers=2)
    params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {len(tokenizer)} tokens; model: {params:,} parameters", flush=True)
    step, _, seconds = pretrain(
        model, tokenizer, train_pairs, held_out[:EVAL_PROMPTS], args.seed, args.max_steps
    )
    final = skills(model, tokenizer, held_out[:EVAL_PROMPTS])
    torch.manual_seed(args.seed)
    mix = first_turns(model, tokenizer, held_out[:EVAL_PROMPTS])

    args.out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    taught = ", ".join(f"{name} {share:.0%}" for name, share in BEHAVIOURS.items())
    sampled = ", ".join(f"{kind} {share:.0%}" for kind, share in mix.items())
    (args.out / "README.md").write_text(
        f"""# tiny-calculator

A {params / 1e6:.2f} M-parameter Qwen2-shaped causal LM (hidden 96, 2 layers, tied embeddings, fp32) with a {len(tokenizer)}-token
byte-level BPE tokenizer and a ChatML template that lists the tools in a system turn and renders `tool` messages.
It calls tools in the Hermes/Qwen format `<tool_call>{{"name": ..., "arguments": {{...}}}}</tool_call>`.

Pre-trained from scratch on three-digit multiplication transcripts with the `multiply` tool of the bundled MCP
calculator, drawn from a deliberate mix of behaviours ({taught}): it calls the tool sometimes, and often badly
(the first number twice, or broken JSON), or guesses. Reinforcement fine-tuning with the MCP server
(`rftlab launch experiment=mcp_calculator`) teaches it to call the tool right.

Built with `python scripts/build_tiny_calculator.py --seed {args.seed}` (offline, CPU, 1 thread): {step} steps,
{seconds:.0f} s. On {len(held_out[:EVAL_PROMPTS])} held-out prompts, first replies sampled at temperature 1:
{sampled}; a correct tool result copied as the answer (greedy): {final["copy"]:.3f}.
"""
    )
    args.dataset_out.parent.mkdir(parents=True, exist_ok=True)
    with args.dataset_out.open("w") as out:
        for a, b in held_out:
            out.write(
                json.dumps(
                    {"messages": [{"role": "user", "content": question(a, b)}], "ground_truth": str(a * b)}
                )
                + "\n"
            )
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(
        f"skills {final}; wrote {args.out} ({size / 1e6:.2f} MB) and {args.dataset_out} ({len(held_out)} rows)"
    )


if __name__ == "__main__":
    main()
