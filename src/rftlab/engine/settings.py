"""The job's knobs, read from the Fireworks job resource (camelCase), with Fireworks' defaults where unset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rftlab.engine.api import JobFailed

SUPPORTED_EXTRA_BODY_KEYS = ("stop",)
LOSS_METHOD_NAMES = {
    "grpo": "grpo",
    "GRPO": "grpo",
    "METHOD_UNSPECIFIED": "grpo",
    "dapo": "dapo",
    "DAPO": "dapo",
    "gspo-token": "gspo-token",
    "GSPO_TOKEN": "gspo-token",
}
GRPO_DEFAULT_KL_BETA = 0.001
EVALUATOR_TIMEOUT_S = 60.0
DEFAULT_EVALUATOR_CONCURRENCY = 96  # Fireworks' default maxConcurrentEvaluations; workers start on demand
MAX_EVALUATOR_CONCURRENCY = 128


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_p: float
    top_k: int
    max_output_tokens: int
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def as_greedy(self) -> SamplingParams:
        return SamplingParams(0.0, 1.0, 0, self.max_output_tokens, self.stop)


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int
    learning_rate: float
    lora_rank: int
    batch_tokens: int
    max_context_length: int
    gradient_accumulation_steps: int
    warmup_steps: int
    weight_decay: float
    loss_method: str
    kl_beta: float


@dataclass(frozen=True)
class JobSettings:
    training: TrainingSettings
    sampling: SamplingParams
    candidates: int
    chunk_size: int
    eval_auto_carveout: bool
    evaluator_concurrency: int


def _stop_strings(extra_body: Any) -> tuple[str, ...]:
    if isinstance(extra_body, str):
        if not extra_body.strip():
            return ()
        try:
            extra_body = json.loads(extra_body)
        except json.JSONDecodeError as error:
            raise JobFailed(f"inferenceParameters.extraBody is not valid JSON: {error}") from error
    if extra_body is None:
        return ()
    if not isinstance(extra_body, dict):
        raise JobFailed('inferenceParameters.extraBody must be a JSON object such as {"stop": ["\\n"]}')
    unknown = sorted(set(extra_body) - set(SUPPORTED_EXTRA_BODY_KEYS))
    if unknown:
        raise JobFailed(
            f"inferenceParameters.extraBody key(s) {', '.join(map(repr, unknown))} are not supported by the local "
            f"backend; supported: {', '.join(SUPPORTED_EXTRA_BODY_KEYS)}"
        )
    stop = extra_body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not all(isinstance(item, str) and item for item in stop):
        raise JobFailed("inferenceParameters.extraBody.stop must be a string or a list of non-empty strings")
    return tuple(stop)


def _loss_method(loss_config: dict[str, Any]) -> str:
    method = loss_config.get("method") or "grpo"
    if method not in LOSS_METHOD_NAMES:
        raise JobFailed(f"lossConfig.method {method!r} is not supported; use grpo, dapo or gspo-token")
    return LOSS_METHOD_NAMES[method]


def job_settings(job: dict[str, Any]) -> JobSettings:
    if job.get("mcpServer"):
        raise JobFailed(
            f"mcpServer {job['mcpServer']!r}: MCP tool rollouts are not supported yet by the local backend; "
            "remove mcpServer from the job"
        )
    training = job.get("trainingConfig") or {}
    inference = job.get("inferenceParameters") or {}
    loss_config = job.get("lossConfig") or {}
    method = _loss_method(loss_config)
    kl_beta = float(loss_config.get("klBeta") or 0.0)
    if method == "grpo" and kl_beta == 0.0:
        kl_beta = GRPO_DEFAULT_KL_BETA
    if method != "grpo" and kl_beta != 0.0:
        raise JobFailed(f"lossConfig.klBeta must be 0 or unset when the method is {method}")
    candidates = int(inference.get("responseCandidatesCount") or inference.get("n") or 8)
    if candidates < 2:
        raise JobFailed(f"inferenceParameters.responseCandidatesCount is {candidates}; it must be at least 2")
    temperature = float(inference.get("temperature", 0.7))
    if temperature <= 0:
        raise JobFailed(f"inferenceParameters.temperature is {temperature}; it must be above 0")
    return JobSettings(
        training=TrainingSettings(
            epochs=int(training.get("epochs") or 1),
            learning_rate=float(training.get("learningRate") or 1e-4),
            lora_rank=int(training.get("loraRank") or 8),
            batch_tokens=int(training.get("batchSize") or 32768),
            max_context_length=int(training.get("maxContextLength") or 8192),
            gradient_accumulation_steps=int(training.get("gradientAccumulationSteps") or 1),
            warmup_steps=int(training.get("learningRateWarmupSteps") or 0),
            weight_decay=float(training.get("optimizerWeightDecay", 0.01)),
            loss_method=method,
            kl_beta=kl_beta,
        ),
        sampling=SamplingParams(
            temperature=temperature,
            top_p=float(inference.get("topP") or 1.0),
            top_k=int(inference.get("topK", 40) or 0),
            max_output_tokens=int(inference.get("maxOutputTokens") or inference.get("maxTokens") or 2048),
            stop=_stop_strings(inference.get("extraBody")),
        ),
        candidates=candidates,
        chunk_size=int(job.get("chunkSize") or 200),
        eval_auto_carveout=bool(job.get("evalAutoCarveout", True)),
        evaluator_concurrency=min(
            MAX_EVALUATOR_CONCURRENCY,
            int(job.get("maxConcurrentEvaluations") or DEFAULT_EVALUATOR_CONCURRENCY),
        ),
    )
