"""Base model resolution and loading: bundled names, local folders, GGUF files, Fireworks names, hub ids.

Fireworks names (`accounts/fireworks/models/<id>` or a bare `<id>`) map to Hugging Face repos through
`FIREWORKS_TO_HF`. A hub id is looked up first in the local models folder (`local_models_dir()`, where
scripts/prepare_real_model.py puts models prepared offline), then on the hub where it is reachable. A `.gguf` file
is dequantized at load through transformers' GGUF support (the `gguf` package). The device is CUDA when present
(bf16), else CPU (fp32: faster than bf16 on CPUs without bf16 matmul units, and exact enough for small models).
On CPU, torch uses its own thread count: one per core, or OMP_NUM_THREADS, which the local backend sets for each
job to its share of the cores.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from rftlab.engine.api import JobFailed
from rftlab.paths import ASSETS_DIR

BUNDLED_MODELS = {"tiny-arith": ASSETS_DIR / "tiny-arith", "tiny-calculator": ASSETS_DIR / "tiny-calculator"}

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
MODELS_DIR_ENV = "RFTLAB_MODELS_DIR"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def local_models_dir() -> Path:
    """Models prepared offline, one folder per hub id (`<dir>/<org>/<name>`): $RFTLAB_MODELS_DIR, else
    ~/.cache/rftlab/models."""
    configured = os.environ.get(MODELS_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "rftlab" / "models"


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["folder", "gguf", "hub"]
    location: str
    """A folder, a .gguf file, or a hub repo id."""

    def describe(self) -> str:
        return {"folder": "local folder", "gguf": "GGUF file", "hub": "hub repo"}[
            self.kind
        ] + f" {self.location}"


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or not HUB_ID.fullmatch(name)


def model_source(name: str) -> ModelSource:
    """Where `name` loads from; a JobFailed naming what was tried when it cannot be anything."""
    if name in BUNDLED_MODELS:
        return ModelSource("folder", str(BUNDLED_MODELS[name]))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise JobFailed(f"base model {name!r}: GGUF file {path.resolve()} does not exist")
        return ModelSource("gguf", str(path))
    if path.is_dir():
        return ModelSource("folder", str(path))
    short = name.removeprefix(FIREWORKS_MODEL_PREFIX)
    if short in FIREWORKS_TO_HF:
        return _hub_or_prepared(FIREWORKS_TO_HF[short])
    if name.startswith("accounts/"):
        known = ", ".join(sorted(FIREWORKS_TO_HF))
        raise JobFailed(
            f"base model {name!r} has no Hugging Face equivalent known to the local backend; "
            f"use one of {known}, a local model folder, or a hub repo id"
        )
    if _looks_like_path(name):
        raise JobFailed(
            f"base model {name!r}: no such folder ({path.resolve()} does not exist), and it is not a hub repo id "
            "(ORG/NAME); check the path (a relative one resolves against the working directory of the process "
            "that loads it, the server's for a job: prefer an absolute path)"
        )
    return _hub_or_prepared(name)


def _hub_or_prepared(hub_id: str) -> ModelSource:
    prepared = local_models_dir() / hub_id
    if (prepared / "config.json").is_file():
        return ModelSource("folder", str(prepared))
    return ModelSource("hub", hub_id)


def resolve_model_source(name: str) -> str:
    """The local folder, GGUF file or hub repo id that `name` stands for."""
    return model_source(name).location


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype


def choose_placement() -> Placement:
    if torch.cuda.is_available():
        return Placement(torch.device("cuda"), torch.bfloat16)
    return Placement(torch.device("cpu"), torch.float32)


@dataclass
class BaseModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: ModelSource
    notice: str
    """One line for the job's log and status: what was loaded from where."""


def load_base(name: str, placement: Placement) -> BaseModel:
    """The model and tokenizer `name` stands for, on `placement`; JobFailed saying what was tried and what to
    do when it cannot load."""
    source = model_source(name)
    transformers_logging.disable_progress_bar()  # a per-tensor bar would litter `rftlab chat` and worker logs
    try:
        if source.kind == "gguf":
            model, tokenizer = dequantized_from_gguf(Path(source.location), placement.dtype)
        else:
            _check_folder(name, source)
            tokenizer = AutoTokenizer.from_pretrained(source.location)
            model = AutoModelForCausalLM.from_pretrained(source.location, dtype=placement.dtype)
    except JobFailed:
        raise
    except ImportError as error:
        raise JobFailed(
            f"cannot load base model {name!r} ({source.describe()}): {error}. Install the local extra: "
            "pip install -e '.[local]'"
        ) from error
    except (OSError, ValueError, KeyError) as error:
        raise JobFailed(
            f"cannot load base model {name!r} ({source.describe()}): {_first_line(error)}. {_advice(source)}"
        ) from error
    if tokenizer.chat_template is None:
        raise JobFailed(
            f"base model {name!r} ({source.describe()}) has no chat template in its tokenizer config: "
            "use an instruct (chat) model"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # PEFT records this as the adapter's base_model_name_or_path: the job's own name for the base (a bundled
    # name, a Fireworks name, a hub id), which stays valid when folders move, not the folder it resolved to
    model.name_or_path = name
    notice = f"base model {name}: {source.describe()}"
    if source.kind == "gguf":
        notice += f", dequantized from GGUF to {str(placement.dtype).removeprefix('torch.')} at load"
    return BaseModel(model.to(placement.device), tokenizer, source, notice)


def load_base_model(name: str, placement: Placement) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    loaded = load_base(name, placement)
    return loaded.model, loaded.tokenizer


def _check_folder(name: str, source: ModelSource) -> None:
    if source.kind != "folder" or (Path(source.location) / "config.json").is_file():
        return
    ggufs = sorted(Path(source.location).glob("*.gguf"))
    hint = (
        f"; it holds {ggufs[0].name}: pass that file as the base model"
        if ggufs
        else ": point at a folder written by save_pretrained (config.json, weights, tokenizer files)"
    )
    raise JobFailed(
        f"base model {name!r}: folder {source.location} is not a Hugging Face model folder "
        f"(no config.json){hint}"
    )


def _advice(source: ModelSource) -> str:
    if source.kind == "hub":
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        return (
            (
                "HF_HUB_OFFLINE is set, so the hub was not asked and the model is not in the local hub cache"
                if offline
                else "the hub could not provide it (no network, a private or gated repo, or a mistyped id)"
            )
            + f"; download it where the hub is reachable, or prepare it into {local_models_dir() / source.location}, "
            f"or pass a local model folder or .gguf file (there is no folder {Path(source.location).resolve()})"
        )
    if source.kind == "gguf":
        return (
            "transformers could not read this GGUF file (its architecture or quantization may be unsupported)"
        )
    return "the folder's files are incomplete or not a causal language model"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def dequantized_from_gguf(
    gguf_file: Path, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a GGUF file, dequantized to `dtype`, as a normal dense model (its GGUF quantizer
    dropped, so that save_pretrained and PEFT treat it like any other)."""
    folder, file_name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file_name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file_name, dtype=dtype)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model, tokenizer


def declared_eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every end-of-sequence id the model declares: its generation config's (an int or a list) and the
    tokenizer's, in that order, without repeats."""
    declared = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = declared if isinstance(declared, (list, tuple)) else [declared]
    ids = [*ids, tokenizer.eos_token_id]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


@contextmanager
def peft_deprecation_silenced() -> Iterator[None]:
    """PEFT reads a property transformers 5 renamed; its FutureWarning would reach every job log and `rftlab chat`,
    and is not the user's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield
