"""The bundled tiny-arith model and arithmetic dataset: they load offline and the model is partly right."""

from __future__ import annotations

import json
import re

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from rftlab.paths import ASSETS_DIR

MODEL_DIR = ASSETS_DIR / "tiny-arith"
DATASET_PATH = ASSETS_DIR / "arithmetic" / "train.jsonl"
QUESTION = re.compile(r"What is (\d{2})\+(\d{2})\?")


@pytest.fixture(scope="module")
def rows():
    with DATASET_PATH.open() as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def tokenizer():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        return AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()


def test_folder_is_under_ten_megabytes():
    assert sum(f.stat().st_size for f in MODEL_DIR.iterdir()) < 10_000_000


def test_model_is_a_small_fp32_qwen2(model):
    assert model.config.model_type == "qwen2"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 3_000_000


def test_chat_template_renders_chatml_with_generation_prompt(tokenizer):
    messages = [{"role": "user", "content": "What is 23+45?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nWhat is 23+45?<|im_end|>\n<|im_start|>assistant\n"
    without_prompt = tokenizer.apply_chat_template(messages, tokenize=False)
    assert without_prompt == "<|im_start|>user\nWhat is 23+45?<|im_end|>\n"


def test_special_tokens(tokenizer, model):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert len(tokenizer.encode("<|im_start|>", add_special_tokens=False)) == 1


def test_digits_are_one_token_each(tokenizer):
    ids = tokenizer.encode("1234567890", add_special_tokens=False)
    assert tokenizer.convert_ids_to_tokens(ids) == list("1234567890")


def test_raw_tokenizer_json_and_auto_tokenizer_agree(tokenizer, rows):
    raw = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    for row in rows[:50]:
        conversation = [*row["messages"], {"role": "assistant", "content": row["ground_truth"]}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
        assert raw.encode(text, add_special_tokens=False).ids == tokenizer.encode(
            text, add_special_tokens=False
        )
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_every_dataset_row_is_a_valid_addition_question(rows):
    assert len(rows) == 2000
    prompts = set()
    for number, row in enumerate(rows, start=1):
        assert set(row) == {"messages", "ground_truth"}, f"line {number}"
        (message,) = row["messages"]
        assert message["role"] == "user", f"line {number}"
        match = QUESTION.fullmatch(message["content"])
        assert match, f"line {number}: {message['content']!r}"
        assert row["ground_truth"] == str(int(match[1]) + int(match[2])), f"line {number}"
        prompts.add(message["content"])
    assert len(prompts) == len(rows)


def test_greedy_answers_are_partly_right(tokenizer, model, rows):
    """Partly right is the point: GRPO needs some rollouts rewarded and some not."""
    sample = rows[:48]
    texts = [
        tokenizer.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
        for r in sample
    ]
    tokenizer.padding_side = "left"
    encoded = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = model.generate(
            **encoded, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    replies_ids = generated[:, encoded["input_ids"].shape[1] :]
    replies = tokenizer.batch_decode(replies_ids, skip_special_tokens=True)
    right = sum(reply.strip() == row["ground_truth"] for reply, row in zip(replies, sample, strict=True))
    assert 0.1 < right / len(sample) < 0.8, replies
    ends_with_eos = sum(tokenizer.eos_token_id in ids.tolist() for ids in replies_ids)
    assert ends_with_eos / len(sample) > 0.9, "replies should stop at <|im_end|>"
    assert all(reply.strip().isdigit() for reply in replies), replies
