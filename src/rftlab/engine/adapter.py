"""The policy's LoRA adapter: attached to a base model (new, or a warm start), saved in PEFT format, loaded for
chat, and merged into a plain copy for fast sampling from small models.

The merged copy: a plain copy of the policy with its adapter merged into the weights.

Each LoRA-wrapped linear layer of a decode step runs four extra small ops (the adapter's two matmuls, scaling,
addition); for a model of a few million parameters on a CPU they cost about a fifth of the step. The merged copy
runs plain linear layers instead. `refresh()` writes base + scale * B @ A into the copy from the policy's current
adapter, so it always samples the weights being trained. In fp32 the copy's log-probabilities equal the
policy's to about 1e-6; the copy costs one more model's memory, which is why only small models on CPU use it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.utils import SAFETENSORS_WEIGHTS_NAME
from safetensors.torch import save_file
from transformers import PreTrainedModel

from rftlab.engine.models import peft_deprecation_silenced

SMALL_MODEL_PARAMETERS = 20_000_000


def attach_adapter(base: PreTrainedModel, rank: int, warm_start: Path | None) -> PeftModel:
    """LoRA on every linear layer of `base` (alpha = 2 x rank), or the adapter saved at `warm_start`."""
    with peft_deprecation_silenced():
        if warm_start is not None:
            return PeftModel.from_pretrained(base, warm_start, is_trainable=True)
        config = LoraConfig(
            r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", bias="none"
        )
        return get_peft_model(base, config)


def load_adapter(base: PreTrainedModel, folder: Path) -> PeftModel:
    """A saved adapter on `base`, for inference."""
    with peft_deprecation_silenced():
        return PeftModel.from_pretrained(base, folder)


def save_adapter(model: PeftModel, folder: Path) -> None:
    """The adapter in PEFT format (adapter_config.json, adapter_model.safetensors), as `save_pretrained` writes
    it minus the model card, which it renders from a template on every call: a large share of a small model's
    step when done after each one."""
    folder.mkdir(parents=True, exist_ok=True)
    model.peft_config[model.active_adapter].save_pretrained(folder)
    # save_embedding_layers=False: the adapter never resizes the vocabulary, and "auto" reads the base model's
    # config from disk on every call to find out
    state_dict = get_peft_model_state_dict(model, save_embedding_layers=False)
    save_file(state_dict, folder / SAFETENSORS_WEIGHTS_NAME, metadata={"format": "pt"})


def merges_for_sampling(model: PreTrainedModel) -> bool:
    return (
        isinstance(model, PeftModel)
        and model.device.type == "cpu"
        and model.dtype == torch.float32
        and model.get_base_model().num_parameters() < SMALL_MODEL_PARAMETERS
    )


class MergedCopy:
    def __init__(self, policy: PeftModel):
        self.policy = policy
        self.model = copy.deepcopy(policy).merge_and_unload().eval()
        self._layers = [
            (name, module)
            for name, module in policy.get_base_model().named_modules()
            if isinstance(module, LoraLayer)
        ]

    @torch.no_grad()
    def refresh(self) -> PreTrainedModel:
        """The copy, carrying the policy's adapter as it is now."""
        for name, lora_layer in self._layers:
            (adapter,) = lora_layer.active_adapters
            merged_weight = lora_layer.base_layer.weight + lora_layer.get_delta_weight(adapter)
            self.model.get_submodule(name).weight.copy_(merged_weight)
        return self.model
