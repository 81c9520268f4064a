"""A validated `RunSpec` as Fireworks sees it: the REST request body, the firectl command line, a summary."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from rftlab.fireworks.contract import LOSS_METHODS
from rftlab.launch.spec import RunSpec


@dataclass(frozen=True)
class InputNames:
    """Full resource names of the job's inputs on the backend."""

    dataset: str
    evaluator: str
    evaluation_dataset: str | None = None
    mcp_server: str | None = None


def _present(pairs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in pairs.items() if value is not None}


def request_body(spec: RunSpec, inputs: InputNames, wandb_api_key: str | None) -> dict[str, Any]:
    """The `reinforcementFineTuningJobs` create body, camelCase, fields in a fixed order."""
    training, sampling = spec.training, spec.sampling
    body: dict[str, Any] = {
        "dataset": inputs.dataset,
        "evaluator": inputs.evaluator,
        **_present({"evaluationDataset": inputs.evaluation_dataset}),
        "evalAutoCarveout": spec.dataset.eval_auto_carveout,
        # rftlab's local backend only (validation refuses it elsewhere)
        **_present({"evalPasses": None if spec.eval_passes is None else list(spec.eval_passes)}),
        "trainingConfig": _present(
            {
                "baseModel": spec.model.base_model,
                "warmStartFrom": spec.model.warm_start_from,
                "outputModel": spec.output_model,
                "epochs": training.epochs,
                "learningRate": training.learning_rate,
                "maxContextLength": training.max_context_length,
                "batchSize": training.batch_size,
                "batchSizeSamples": training.batch_size_samples,
                "gradientAccumulationSteps": training.gradient_accumulation_steps,
                "learningRateWarmupSteps": training.learning_rate_warmup_steps,
                "optimizerWeightDecay": training.optimizer_weight_decay,
                "loraRank": training.lora_rank,
            }
        ),
        "inferenceParameters": _present(
            {
                "temperature": sampling.temperature,
                "topP": sampling.top_p,
                "topK": sampling.top_k,
                "responseCandidatesCount": sampling.response_candidates_count,
                "maxOutputTokens": sampling.max_output_tokens,
                "extraBody": None
                if sampling.extra_body is None
                else json.dumps(sampling.extra_body, separators=(",", ":")),
            }
        ),
        "lossConfig": {"method": LOSS_METHODS[training.loss_method], "klBeta": training.kl_beta},
        "chunkSize": training.chunk_size,
        **_present(
            {
                "mcpServer": inputs.mcp_server,
                "displayName": spec.display_name,
                "nodeCount": spec.node_count,
                "maxConcurrentRollouts": spec.max_concurrent_rollouts,
                "maxConcurrentEvaluations": spec.max_concurrent_evaluations,
            }
        ),
    }
    if spec.wandb.enabled:
        body["wandbConfig"] = _present(
            {
                "enabled": True,
                "apiKey": wandb_api_key,
                "project": spec.wandb.project,
                "entity": spec.wandb.entity,
                # rftlab's local backend only (validation refuses it elsewhere): write the W&B run offline
                "mode": "offline" if spec.wandb.mode == "offline" else None,
            }
        )
    return body


FIRECTL_INEXPRESSIBLE = {
    "evaluationDataset": "a separate evaluation dataset",
    "displayName": "a display name",
    "evalPasses": "the evaluation passes",
}
"""Request fields that `firectl reinforcement-fine-tuning-job create` has no flag for."""


def firectl_command(spec: RunSpec, job_id: str, account_id: str | None, body: dict[str, Any]) -> str:
    """The equivalent `firectl reinforcement-fine-tuning-job create` command line (W&B key from the
    environment), only with flags firectl has; a `#` line before it names what no flag can express."""
    training, inference, loss = body["trainingConfig"], body["inferenceParameters"], body["lossConfig"]
    flags: list[tuple[str, Any]] = [
        ("--job-id", job_id),
        ("--base-model", training.get("baseModel")),
        ("--warm-start-from", training.get("warmStartFrom")),
        ("--output-model", training.get("outputModel")),
        ("--dataset", body["dataset"]),
        ("--evaluator", body["evaluator"]),
        ("--mcp-server", body.get("mcpServer")),
        ("--epochs", training["epochs"]),
        ("--learning-rate", training["learningRate"]),
        ("--max-context-length", training["maxContextLength"]),
        ("--batch-size", training["batchSize"]),
        ("--batch-size-samples", training.get("batchSizeSamples")),
        ("--gradient-accumulation-steps", training["gradientAccumulationSteps"]),
        ("--learning-rate-warmup-steps", training["learningRateWarmupSteps"]),
        ("--optimizer-weight-decay", training.get("optimizerWeightDecay")),
        ("--lora-rank", training["loraRank"]),
        ("--rl-loss-method", spec.training.loss_method),
        ("--rl-kl-beta", loss["klBeta"]),
        ("--chunk-size", body["chunkSize"]),
        ("--temperature", inference["temperature"]),
        ("--top-p", inference["topP"]),
        ("--top-k", inference["topK"]),
        ("--response-candidates-count", inference["responseCandidatesCount"]),
        ("--max-output-tokens", inference["maxOutputTokens"]),
        ("--extra-body", inference.get("extraBody")),
        ("--max-concurrent-rollouts", body.get("maxConcurrentRollouts")),
        ("--max-concurrent-evaluations", body.get("maxConcurrentEvaluations")),
        ("--nodes", body.get("nodeCount")),
    ]
    words = ["firectl", "reinforcement-fine-tuning-job", "create"]
    for flag, value in flags:
        if value is not None:
            words += [flag, shlex.quote(str(value))]
    if body["evalAutoCarveout"]:
        words.append("--eval-auto-carveout")
    if "wandbConfig" in body:
        wandb = body["wandbConfig"]
        words += ["--wandb", "--wandb-api-key", '"$WANDB_API_KEY"']
        for flag, key in (("--wandb-project", "project"), ("--wandb-entity", "entity")):
            if wandb.get(key):
                words += [flag, shlex.quote(wandb[key])]
    if account_id:
        words += ["--account-id", shlex.quote(account_id)]
    if spec.backend.profile:
        words += ["--profile", shlex.quote(spec.backend.profile)]
    if spec.quiet:
        words.append("--quiet")
    missing = [
        f"{what} ({field}={body[field]})" for field, what in FIRECTL_INEXPRESSIBLE.items() if body.get(field)
    ]
    comment = (
        f"# firectl has no flag for {', '.join(missing)}; the REST request carries it\n" if missing else ""
    )
    return comment + " ".join(words)


def summary(spec: RunSpec, job_id: str, url: str, body: dict[str, Any]) -> str:
    """A readable account of one request."""
    training, inference, loss = body["trainingConfig"], body["inferenceParameters"], body["lossConfig"]
    model = training.get("baseModel") or f"warm start from {training.get('warmStartFrom')}"
    evaluation = body.get("evaluationDataset") or ("auto carve-out" if body["evalAutoCarveout"] else "none")
    if body.get("evalPasses"):
        evaluation += f", passes {' and '.join(body['evalPasses'])}"
    wandb = body.get("wandbConfig")
    lines = [
        f"job        {job_id}",
        f"request    POST {url}",
        f"model      {model}" + (f" -> {training['outputModel']}" if training.get("outputModel") else ""),
        f"dataset    {body['dataset']}   (eval: {evaluation})",
        f"evaluator  {body['evaluator']}",
        f"training   epochs={training['epochs']} learning_rate={training['learningRate']} "
        f"lora_rank={training['loraRank']} batch_size={training['batchSize']} tokens "
        f"max_context_length={training['maxContextLength']} chunk_size={body['chunkSize']}",
        f"loss       {loss['method']} kl_beta={loss['klBeta']}",
        f"sampling   K={inference['responseCandidatesCount']} temperature={inference['temperature']} "
        f"top_p={inference['topP']} top_k={inference['topK']} max_output_tokens={inference['maxOutputTokens']}"
        + (f" extra_body={inference['extraBody']}" if "extraBody" in inference else ""),
        "wandb      "
        + (
            f"{wandb.get('mode', 'online')} project={wandb.get('project')} entity={wandb.get('entity')}"
            if wandb
            else "off"
        ),
    ]
    if body.get("mcpServer"):
        lines.append(f"mcp        {body['mcpServer']}")
    return "\n".join(lines)
