"""Base model resolution and loading: bundled names, local folders, Fireworks names, hub ids.

Fireworks names (`accounts/fireworks/models/<id>` or a bare `<id>`) map to Hugging Face repos through
`FIREWORKS_TO_HF`. The device is CUDA when present (bf16), else CPU (fp32: faster than bf16 on CPUs without
bf16 matmul units, and exact enough for small models). On CPU, torch uses its own thread count: one per core,
or OMP_NUM_THREADS, which the local backend sets for each job to its share of the cores.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from rftlab.engine.api import JobFailed
from rftlab.paths import ASSETS_DIR

BUNDLED_MODELS = {"tiny-arith": ASSETS_DIR / "tiny-arith"}

FIREWORKS_TO_HF = {
    "qwen3-0p6b": "Qwen/Qwen3-0.6B",
    "qwen3-1p7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-14b": "Qwen/Qwen3-14B",
    "qwen2p5-0p5b-instruct": "Qwen/Qwen2.5-0.5B-Instruct",
    "qwen2p5-1p5b-instruct": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2p5-7b-instruct": "Qwen/Qwen2.5-7B-Instruct",
    "llama-v3-8b-instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "llama-v3p1-8b-instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "llama-v3p2-1b-instruct": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-v3p2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
}
FIREWORKS_MODEL_PREFIX = "accounts/fireworks/models/"


def resolve_model_source(name: str) -> str:
    """The local folder or hub repo id that `name` stands for."""
    if name in BUNDLED_MODELS:
        return str(BUNDLED_MODELS[name])
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    short = name.removeprefix(FIREWORKS_MODEL_PREFIX)
    if short in FIREWORKS_TO_HF:
        return FIREWORKS_TO_HF[short]
    if name.startswith("accounts/"):
        known = ", ".join(sorted(FIREWORKS_TO_HF))
        raise JobFailed(
            f"base model {name!r} has no Hugging Face equivalent known to the local backend; "
            f"use one of {known}, a local model folder, or a hub repo id"
        )
    return name


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def choose_placement() -> Placement:
    if torch.cuda.is_available():
        return Placement(torch.device("cuda"), torch.bfloat16)
    return Placement(torch.device("cpu"), torch.float32)


def load_base_model(name: str, placement: Placement) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source = resolve_model_source(name)
    transformers_logging.disable_progress_bar()  # a per-tensor bar would litter `rftlab chat` and worker logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=placement.dtype)
    except OSError as error:
        raise JobFailed(
            f"cannot load base model {name!r} from {source!r}: {error}. The local backend loads models from local "
            "folders, or from the Hugging Face hub where it is reachable (HF_HUB_OFFLINE=1 disables it)."
        ) from error
    if tokenizer.chat_template is None:
        raise JobFailed(f"base model {name!r} ({source}) has no chat template in its tokenizer config")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(placement.device), tokenizer


@contextmanager
def peft_deprecation_silenced() -> Iterator[None]:
    """PEFT reads a property transformers 5 renamed; its FutureWarning would reach every job log and `rftlab chat`,
    and is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield
