"""Build the bundled `tiny-arith` model and the `arithmetic` dataset, offline and deterministically.

    python scripts/build_tiny_arith.py [--out DIR] [--dataset-out FILE] [--seed N] [--target-greedy P]

1. Trains a byte-level BPE tokenizer on synthetic chat text (digits stay one per token) with a ChatML template.
2. Pre-trains a 2.5 M-parameter Qwen2-shaped model on two-digit addition in chat form ("What is 23+45?" -> "68"),
   evaluating greedy accuracy on held-out prompts every few steps, and keeps the checkpoint closest to
   `--target-greedy`: the model is meant to be partly right, so reinforcement fine-tuning has signal to learn from.
3. Writes the model folder (`save_pretrained`, plus a README with the measured accuracies) and the dataset: rows
   built from the held-out pairs, never seen in pre-training, in the exact prompt wording used here.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_DIR = REPO_ROOT / "src/rftlab/assets/tiny-arith"
DEFAULT_DATASET = REPO_ROOT / "src/rftlab/assets/arithmetic/train.jsonl"

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
# Qwen2Tokenizer (transformers 5) rebuilds the pre-tokenizer with this split regex whatever tokenizer.json says, so
# the BPE is trained with it too; `\p{N}` keeps every digit a token of its own.
QWEN2_SPLIT_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
VOCAB_SIZE = 320
DATASET_ROWS = 2000
EVAL_PROMPTS = 256


def question(a: int, b: int) -> str:
    return f"What is {a}+{b}?"


def dataset_row(a: int, b: int) -> dict:
    return {"messages": [{"role": "user", "content": question(a, b)}], "ground_truth": str(a + b)}


def split_pairs(seed: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """All two-digit pairs, shuffled: the first DATASET_ROWS are held out (the dataset), the rest pre-train."""
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(pairs)
    return pairs[DATASET_ROWS:], pairs[:DATASET_ROWS]


def train_bpe(lines: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE over `lines` with Qwen2's split regex (what AutoTokenizer applies to model_type qwen2)
    and the chat special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer


def train_tokenizer(seed: int) -> PreTrainedTokenizerFast:
    rng = random.Random(seed)
    chat_lines = [
        f"{IM_START}user\n{question(a, b)}{IM_END}\n{IM_START}assistant\n{a + b}{IM_END}\n"
        for a, b in ((rng.randint(10, 99), rng.randint(10, 99)) for _ in range(2000))
    ]
    words = [
        "what",
        "is",
        "the",
        "sum",
        "of",
        "plus",
        "and",
        "answer",
        "number",
        "add",
        "two",
        "digits",
        "question",
        "system",
        "user",
        "assistant",
    ]
    prose = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(500)]

    tokenizer = train_bpe(chat_lines + prose, VOCAB_SIZE)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        chat_template=CHATML_TEMPLATE,
        model_max_length=512,
    )


def prompt_text(tokenizer, a: int, b: int) -> str:
    messages = [{"role": "user", "content": question(a, b)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor


def supervised_batch(tokenizer, pairs: list[tuple[int, int]]) -> Batch:
    """Prompt + answer + <|im_end|>, right-padded; the loss covers the answer and eos only."""
    rows = []
    for a, b in pairs:
        prompt_ids = tokenizer.encode(prompt_text(tokenizer, a, b), add_special_tokens=False)
        answer_ids = [*tokenizer.encode(str(a + b), add_special_tokens=False), tokenizer.eos_token_id]
        rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (ids, row_labels) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
        labels[i, : len(ids)] = torch.tensor(row_labels)
    return Batch(input_ids, attention_mask, labels)


@torch.no_grad()
def accuracy(model, tokenizer, pairs: list[tuple[int, int]], sample: bool) -> float:
    """Share of prompts answered exactly; sampling uses temperature 1.0 with no top-k/top-p cut."""
    tokenizer.padding_side = "left"
    encoded = tokenizer([prompt_text(tokenizer, a, b) for a, b in pairs], return_tensors="pt", padding=True)
    sampling = (
        {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {"do_sample": False}
    )
    generated = model.generate(
        **encoded,
        max_new_tokens=5,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **sampling,
    )
    answers = tokenizer.batch_decode(generated[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    return sum(answer.strip() == str(a + b) for answer, (a, b) in zip(answers, pairs, strict=True)) / len(
        pairs
    )


def build_model(tokenizer, hidden: int = 256, intermediate: int = 512, layers: int = 4) -> torch.nn.Module:
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


@dataclass
class Pretrained:
    model: torch.nn.Module
    step: int
    greedy: float
    seconds: float


def pretrain(
    model,
    tokenizer,
    train_pairs: list[tuple[int, int]],
    eval_pairs: list[tuple[int, int]],
    target_greedy: float,
    seed: int,
    max_steps: int = 3000,
    eval_every: int = 10,
    batch_size: int = 128,
) -> Pretrained:
    """AdamW with warmup and cosine decay; stops once greedy accuracy is well past the target and returns the
    evaluated checkpoint closest to it. Greedy evaluation draws no random numbers, so the run is reproducible."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    warmup = 50
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)),
    )
    best: Pretrained | None = None
    started = time.perf_counter()
    for step in range(1, max_steps + 1):
        model.train()
        picks = torch.randint(len(train_pairs), (batch_size,), generator=generator).tolist()
        batch = supervised_batch(tokenizer, [train_pairs[i] for i in picks])
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % eval_every:
            continue
        model.eval()
        greedy = accuracy(model, tokenizer, eval_pairs, sample=False)
        seconds = time.perf_counter() - started
        print(f"step {step:5d}  loss {loss.item():.3f}  greedy {greedy:.3f}  {seconds:.0f}s", flush=True)
        if best is None or abs(greedy - target_greedy) < abs(best.greedy - target_greedy):
            best = Pretrained(copy.deepcopy(model), step, greedy, seconds)
        if greedy >= target_greedy + 0.25:
            break
    assert best is not None
    return best


def check_tokenizer_round_trip(folder: Path, eval_pairs: list[tuple[int, int]]) -> None:
    """AutoTokenizer must give the same ids as the raw tokenizer.json (it rebuilds parts of the pipeline)."""
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    loaded = AutoTokenizer.from_pretrained(folder)
    for a, b in eval_pairs[:64]:
        text = prompt_text(loaded, a, b) + f"{a + b}{IM_END}\n"
        assert raw.encode(text, add_special_tokens=False).ids == loaded.encode(
            text, add_special_tokens=False
        ), text
    digits = loaded.encode("0123456789", add_special_tokens=False)
    assert len(digits) == 10, f"digits must be one token each, got {digits}"


def write_readme(
    folder: Path, args, result: Pretrained, sampled: float, params: int, eval_count: int
) -> None:
    (folder / "README.md").write_text(
        f"""# tiny-arith

A {params / 1e6:.2f} M-parameter Qwen2-shaped causal LM (hidden 256, intermediate 512, 4 layers, 4 heads,
2 KV heads, tied embeddings, fp32) with its own {VOCAB_SIZE}-token byte-level BPE tokenizer (digits one per token)
and a ChatML chat template (`<|im_start|>`, `<|im_end|>` = eos, `<|endoftext|>` = pad).

It was pre-trained from scratch on two-digit addition in chat form (`What is 23+45?` -> `68`), and deliberately
stopped while only partly right, so reinforcement fine-tuning has something to learn. It is rftlab's default base
model (`tiny-arith`), paired with the `arithmetic` dataset (2000 held-out pairs never seen in pre-training) and the
`exact_match` evaluator.

Built with `python scripts/build_tiny_arith.py --seed {args.seed} --target-greedy {args.target_greedy}`
(offline, CPU, 2 threads): step {result.step}, {result.seconds:.0f} s of training.

Measured on {eval_count} held-out prompts: greedy accuracy {result.greedy:.3f}; sampled accuracy
(temperature 1.0, no top-k/top-p) {sampled:.3f}.
"""
    )


def write_dataset(path: Path, pairs: list[tuple[int, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for a, b in pairs:
            out.write(json.dumps(dataset_row(a, b)) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR, help="model folder to write")
    parser.add_argument("--dataset-out", type=Path, default=DEFAULT_DATASET, help="train.jsonl to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--target-greedy", type=float, default=0.35, help="held-out greedy accuracy to stop at"
    )
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    train_pairs, held_out_pairs = split_pairs(args.seed)
    eval_pairs = held_out_pairs[:EVAL_PROMPTS]

    started = time.perf_counter()
    tokenizer = train_tokenizer(args.seed)
    model = build_model(tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {len(tokenizer)} tokens; model: {params:,} parameters", flush=True)

    result = pretrain(model, tokenizer, train_pairs, eval_pairs, args.target_greedy, args.seed)
    result.model.eval()
    torch.manual_seed(args.seed)
    sampled = accuracy(result.model, tokenizer, eval_pairs, sample=True)

    args.out.mkdir(parents=True, exist_ok=True)
    result.model.generation_config.pad_token_id = tokenizer.pad_token_id
    result.model.generation_config.eos_token_id = tokenizer.eos_token_id
    result.model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    check_tokenizer_round_trip(args.out, eval_pairs)
    write_readme(args.out, args, result, sampled, params, len(eval_pairs))
    write_dataset(args.dataset_out, held_out_pairs)

    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(
        f"chosen step {result.step}: greedy {result.greedy:.3f}, sampled {sampled:.3f} (T=1.0) on {len(eval_pairs)}"
    )
    print(f"wrote {args.out} ({size / 1e6:.2f} MB) and {args.dataset_out} ({len(held_out_pairs)} rows)")
    print(f"build time {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
