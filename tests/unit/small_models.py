"""Random causal LMs of real models' shapes (Qwen2 by default, or Llama), small enough to build in a blink."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, Qwen2Config


def random_causal_lm(
    vocab_size: int,
    *,
    config_class: type[PretrainedConfig] = Qwen2Config,
    seed: int = 0,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    **config: Any,
) -> Any:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(
        config_class(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads,
            **config,
        )
    )
