"""The stored job (Fireworks camelCase, every default applied at create by `schemas.JobRequest`) as the engine's
typed settings, plus the checks of what this backend cannot run yet, which fail the job while VALIDATING."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rftlab.engine.api import JobFailed
from rftlab.engine.settings import JobSettings, SamplingParams, ToolSettings, TrainingSettings
from rftlab.fireworks import contract

TOOL_EXTRA_BODY_KEYS = ("max_turns", "tool_call_timeout_s", "max_tool_result_tokens")
"""Local-backend knobs of tool rollouts (a job with mcpServer), as `ToolSettings` fields."""
SUPPORTED_EXTRA_BODY_KEYS = ("stop", *TOOL_EXTRA_BODY_KEYS)
MAX_EVALUATOR_CONCURRENCY = 128
"""Evaluator worker processes per job at most, whatever maxConcurrentEvaluations asks for."""


def extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    body = json.loads(text)  # the schema accepted only a JSON object
    unknown = sorted(set(body) - set(SUPPORTED_EXTRA_BODY_KEYS))
    if unknown:
        raise JobFailed(
            f"inferenceParameters.extraBody key(s) {', '.join(map(repr, unknown))} are not supported by the local "
            f"backend; supported: {', '.join(SUPPORTED_EXTRA_BODY_KEYS)}"
        )
    return body


def stop_strings(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(item, str) and item for item in stop):
        raise JobFailed("inferenceParameters.extraBody.stop must be a string or a list of non-empty strings")
    return tuple(stop)


def tool_knobs(tools: ToolSettings | None, body: dict[str, Any]) -> ToolSettings | None:
    """`tools` with the extraBody knobs of tool rollouts applied."""
    given = {key: body[key] for key in TOOL_EXTRA_BODY_KEYS if key in body}
    if not given:
        return tools
    if tools is None:
        raise JobFailed(f"inferenceParameters.extraBody {', '.join(given)}: only for a job with an mcpServer")
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise JobFailed(f"inferenceParameters.extraBody.{key} must be a positive number, not {value!r}")
    return dataclasses.replace(
        tools,
        max_turns=int(given.get("max_turns", tools.max_turns)),
        call_timeout_s=float(given.get("tool_call_timeout_s", tools.call_timeout_s)),
        max_result_tokens=int(given.get("max_tool_result_tokens", tools.max_result_tokens)),
    )


def engine_settings(spec: dict[str, Any], tools: ToolSettings | None = None) -> JobSettings:
    """`tools`: how to reach the job's MCP server (`api_mcp_servers.tool_settings`), when it names one."""
    training, inference, loss = spec["trainingConfig"], spec["inferenceParameters"], spec["lossConfig"]
    extra = extra_body(inference.get("extraBody"))
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
            stop=stop_strings(extra),
        ),
        candidates=inference["responseCandidatesCount"],
        chunk_size=spec["chunkSize"],
        eval_auto_carveout=spec["evalAutoCarveout"],
        eval_passes=contract.eval_passes(spec.get("evalPasses") or contract.DEFAULT_EVAL_PASSES),
        evaluator_concurrency=min(MAX_EVALUATOR_CONCURRENCY, spec["maxConcurrentEvaluations"]),
        tools=tool_knobs(tools, extra),
    )


def settings_for(fields: dict[str, Any]) -> JobSettings:
    """The settings this backend would train with for a create request holding `fields` (Fireworks camelCase;
    dataset, evaluator and base model may be left out): what benchmarks and engine tests run the engine with."""
    from rftlab.server.schemas import JobRequest

    training = {"baseModel": "tiny-arith", **fields.get("trainingConfig", {})}
    body = {"dataset": "d", "evaluator": "e", **fields, "trainingConfig": training}
    return engine_settings(JobRequest.model_validate(body).dump())
