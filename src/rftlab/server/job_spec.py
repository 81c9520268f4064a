"""The stored job (Fireworks camelCase, every default applied at create by `schemas.JobRequest`) as the engine's
typed settings, plus the checks of what this backend cannot run yet, which fail the job while VALIDATING."""

from __future__ import annotations

import json
from typing import Any

from rftlab.engine.api import JobFailed
from rftlab.engine.settings import JobSettings, SamplingParams, TrainingSettings
from rftlab.fireworks import contract

SUPPORTED_EXTRA_BODY_KEYS = ("stop",)
MAX_EVALUATOR_CONCURRENCY = 128
"""Evaluator worker processes per job at most, whatever maxConcurrentEvaluations asks for."""


def stop_strings(extra_body: str | None) -> tuple[str, ...]:
    if not extra_body:
        return ()
    body = json.loads(extra_body)  # the schema accepted only a JSON object
    unknown = sorted(set(body) - set(SUPPORTED_EXTRA_BODY_KEYS))
    if unknown:
        raise JobFailed(
            f"inferenceParameters.extraBody key(s) {', '.join(map(repr, unknown))} are not supported by the local "
            f"backend; supported: {', '.join(SUPPORTED_EXTRA_BODY_KEYS)}"
        )
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(item, str) and item for item in stop):
        raise JobFailed("inferenceParameters.extraBody.stop must be a string or a list of non-empty strings")
    return tuple(stop)


def engine_settings(spec: dict[str, Any]) -> JobSettings:
    if spec.get("mcpServer"):
        raise JobFailed(
            f"mcpServer {spec['mcpServer']!r}: MCP tool rollouts are not supported yet by the local backend; "
            "remove mcpServer from the job"
        )
    training, inference, loss = spec["trainingConfig"], spec["inferenceParameters"], spec["lossConfig"]
    return JobSettings(
        training=TrainingSettings(
            epochs=training["epochs"],
            learning_rate=training["learningRate"],
            lora_rank=training["loraRank"],
            batch_tokens=training["batchSize"],
            max_context_length=training["maxContextLength"],
            gradient_accumulation_steps=training["gradientAccumulationSteps"],
            warmup_steps=training["learningRateWarmupSteps"],
            weight_decay=training["optimizerWeightDecay"],
            loss_method=contract.loss_method(loss["method"]),
            kl_beta=loss["klBeta"],
        ),
        sampling=SamplingParams(
            temperature=inference["temperature"],
            top_p=inference["topP"],
            top_k=inference["topK"],
            max_output_tokens=inference["maxOutputTokens"] or contract.DEFAULTS.max_output_tokens,
            stop=stop_strings(inference.get("extraBody")),
        ),
        candidates=inference["responseCandidatesCount"],
        chunk_size=spec["chunkSize"],
        eval_auto_carveout=spec["evalAutoCarveout"],
        evaluator_concurrency=min(MAX_EVALUATOR_CONCURRENCY, spec["maxConcurrentEvaluations"]),
    )


def settings_for(fields: dict[str, Any]) -> JobSettings:
    """The settings this backend would train with for a create request holding `fields` (Fireworks camelCase;
    dataset, evaluator and base model may be left out): what benchmarks and engine tests run the engine with."""
    from rftlab.server.schemas import JobRequest

    training = {"baseModel": "tiny-arith", **fields.get("trainingConfig", {})}
    body = {"dataset": "d", "evaluator": "e", **fields, "trainingConfig": training}
    return engine_settings(JobRequest.model_validate(body).dump())
