"""`source_job=JOB`: start from an existing job's settings, as firectl's `--source-job` does. The job is read from
the backend (even in a dry run: its settings are part of the request); every setting it has replaces the
config's, except the keys set on the command line, which win. The output model, the job id and the display name
are never copied (they name the new job's own results)."""

from __future__ import annotations

import copy
import json
from typing import Any

from rftlab.fireworks import contract

# (wire path in the job, config key)
COPIED = (
    ("trainingConfig.baseModel", "model.base_model"),
    ("trainingConfig.warmStartFrom", "model.warm_start_from"),
    ("trainingConfig.epochs", "training.epochs"),
    ("trainingConfig.learningRate", "training.learning_rate"),
    ("trainingConfig.maxContextLength", "training.max_context_length"),
    ("trainingConfig.batchSize", "training.batch_size"),
    ("trainingConfig.batchSizeSamples", "training.batch_size_samples"),
    ("trainingConfig.gradientAccumulationSteps", "training.gradient_accumulation_steps"),
    ("trainingConfig.learningRateWarmupSteps", "training.learning_rate_warmup_steps"),
    ("trainingConfig.optimizerWeightDecay", "training.optimizer_weight_decay"),
    ("trainingConfig.loraRank", "training.lora_rank"),
    ("lossConfig.method", "training.loss_method"),
    ("lossConfig.klBeta", "training.kl_beta"),
    ("chunkSize", "training.chunk_size"),
    ("inferenceParameters.temperature", "sampling.temperature"),
    ("inferenceParameters.topP", "sampling.top_p"),
    ("inferenceParameters.topK", "sampling.top_k"),
    ("inferenceParameters.responseCandidatesCount", "sampling.response_candidates_count"),
    ("inferenceParameters.maxOutputTokens", "sampling.max_output_tokens"),
    ("inferenceParameters.extraBody", "sampling.extra_body"),
    ("dataset", "dataset.id"),
    ("evaluationDataset", "dataset.evaluation_dataset"),
    ("evalAutoCarveout", "dataset.eval_auto_carveout"),
    ("evalPasses", "eval_passes"),
    ("evaluator", "evaluator.id"),
    ("mcpServer", "mcp_server.id"),
    ("nodeCount", "node_count"),
    ("maxConcurrentRollouts", "max_concurrent_rollouts"),
    ("maxConcurrentEvaluations", "max_concurrent_evaluations"),
)
REPLACED_BY = {
    "model.base_model": ("model.warm_start_from",),
    "model.warm_start_from": ("model.base_model",),
    "dataset.id": ("dataset.path", "dataset.max_rows"),
    "dataset.evaluation_dataset": ("dataset.evaluation_path",),
    "evaluator.id": ("evaluator.path", "evaluator.entry_func"),
}
"""A copied key clears the keys that name the same thing another way (a job names its inputs by id)."""


def settings_of(job: dict[str, Any]) -> dict[str, Any]:
    """The job's settings by config key (only those the job has)."""
    found = {}
    for wire_path, key in COPIED:
        value: Any = job
        for part in wire_path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        if key == "training.loss_method":
            value = contract.loss_method(value)
        elif key == "sampling.extra_body" and isinstance(value, str):
            value = json.loads(value)
        found[key] = value
    return found


def overridden(key: str, overrides: list[str]) -> bool:
    """Whether a command-line override sets `key` itself or chooses its group (`training=dapo`)."""
    for override in overrides:
        name = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0]
        if key == name or key.startswith(name + "."):
            return True
    return False


def apply(config: dict[str, Any], job: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`config` with `job`'s settings in place of every key the command line did not set."""
    merged = copy.deepcopy(config)
    for key, value in settings_of(job).items():
        if overridden(key, overrides) or any(
            overridden(other, overrides) for other in REPLACED_BY.get(key, ())
        ):
            continue
        _set(merged, key, value)
        for other in REPLACED_BY.get(key, ()):
            _set(merged, other, None)
    return merged


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    *sections, name = key.split(".")
    for section in sections:
        config = config.setdefault(section, {})
    config[name] = value
