"""A plain copy of a LoRA policy with its adapter merged into the weights, for sampling from small models.

Each LoRA-wrapped linear layer of a decode step runs four extra small ops (the adapter's two matmuls, scaling,
addition); for a model of a few million parameters on a CPU they cost about a fifth of the step. The merged copy
runs plain linear layers instead. `refresh()` writes base + scale * B @ A into the copy from the policy's current
adapter, so it always samples the weights being trained. In fp32 the copy's log-probabilities equal the
policy's to about 1e-6; the copy costs one more model's memory, which is why only small models on CPU use it.
"""

from __future__ import annotations

import copy

import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

SMALL_MODEL_PARAMETERS = 20_000_000


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
