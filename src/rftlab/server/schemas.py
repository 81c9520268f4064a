"""Request bodies the local backend accepts, in Fireworks' camelCase, and the defaults it applies.

Unknown fields are refused (400 naming the field); output-only fields a client may send back (`name`, `state`...)
are ignored. Defaults follow the Fireworks RFT docs and are echoed by GET, as the hosted service does.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from rftlab.fireworks import contract
from rftlab.fireworks.contract import DEFAULTS, RESOURCE_ID_PATTERN, RESOURCE_ID_RULE
from rftlab.server.errors import invalid

MAX_DISPLAY_NAME_CHARS = 255
"""The database column's width."""


def _printable(text: str) -> str:
    if any(ord(char) < 32 for char in text):
        raise ValueError("must not hold control characters (a NUL cannot even be stored)")
    return text


DisplayName = Annotated[str, Field(max_length=MAX_DISPLAY_NAME_CHARS), AfterValidator(_printable)]

JOB_OUTPUT_ONLY_FIELDS = (
    "name",
    "state",
    "status",
    "createTime",
    "updateTime",
    "completedTime",
    "createdBy",
    "jobProgress",
    "outputMetrics",
    "outputStats",
    "acceleratorSeconds",
    "trainerLogsSignedUrl",
)


class Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def _limits(key: str) -> dict[str, Any]:
    """pydantic Field limits from the contract's local-backend bound of config key `key`."""
    bound = contract.bound(key)
    limits: dict[str, Any] = {}
    if bound.low is not None:
        limits["gt" if bound.gt else "ge"] = bound.low
    if bound.high is not None:
        limits["le"] = bound.high
    return limits


class TrainingConfig(Camel):
    base_model: str | None = None
    warm_start_from: str | None = None
    output_model: str | None = None
    jinja_template: str | None = None
    learning_rate: float = Field(DEFAULTS.learning_rate, **_limits("training.learning_rate"))
    max_context_length: int = Field(DEFAULTS.max_context_length, **_limits("training.max_context_length"))
    lora_rank: int = DEFAULTS.lora_rank
    epochs: int = Field(DEFAULTS.epochs, **_limits("training.epochs"))
    batch_size: int = Field(DEFAULTS.batch_size, **_limits("training.batch_size"))
    batch_size_samples: int = Field(DEFAULTS.batch_size_samples, **_limits("training.batch_size_samples"))
    gradient_accumulation_steps: int = Field(
        DEFAULTS.gradient_accumulation_steps, **_limits("training.gradient_accumulation_steps")
    )
    learning_rate_warmup_steps: int = Field(
        DEFAULTS.learning_rate_warmup_steps, **_limits("training.learning_rate_warmup_steps")
    )
    optimizer_weight_decay: float = Field(
        DEFAULTS.optimizer_weight_decay, **_limits("training.optimizer_weight_decay")
    )
    sampler_checkpoint_save_interval_steps: int | None = Field(None, ge=0)
    region: str | None = None

    @field_validator("lora_rank")
    @classmethod
    def _power_of_two(cls, rank: int) -> int:
        problem = contract.bound("training.lora_rank").problem(rank)
        if problem:
            raise ValueError(problem)
        return rank

    @model_validator(mode="after")
    def _one_starting_point(self) -> TrainingConfig:
        if bool(self.base_model) == bool(self.warm_start_from):
            raise ValueError("set exactly one of trainingConfig.baseModel and trainingConfig.warmStartFrom")
        return self


class InferenceParameters(Camel):
    max_output_tokens: int | None = Field(None, **_limits("sampling.max_output_tokens"))
    """0 means the model's default."""
    temperature: float = Field(DEFAULTS.temperature, **_limits("sampling.temperature"))
    top_p: float = Field(DEFAULTS.top_p, **_limits("sampling.top_p"))
    top_k: int = Field(DEFAULTS.top_k, **_limits("sampling.top_k"))
    response_candidates_count: int | None = Field(None, **_limits("sampling.response_candidates_count"))
    extra_body: str | None = None
    max_tokens: int | None = Field(None, alias="maxTokens", **_limits("sampling.max_output_tokens"))
    """Legacy name of maxOutputTokens."""
    n: int | None = Field(None, alias="n", **_limits("sampling.response_candidates_count"))
    """Legacy name of responseCandidatesCount."""

    @field_validator("extra_body", mode="before")
    @classmethod
    def _json_object_string(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return json.dumps(value)
        if isinstance(value, str) and value:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"must be a JSON object in a string: {error}") from None
            if not isinstance(parsed, dict):
                raise ValueError('must be a JSON object in a string, e.g. "{\\"stop\\": [\\"\\\\n\\"]}"')
        return value or None

    @model_validator(mode="after")
    def _fold_legacy_names(self) -> InferenceParameters:
        for legacy, current in (("max_tokens", "max_output_tokens"), ("n", "response_candidates_count")):
            old, new = getattr(self, legacy), getattr(self, current)
            if old is not None and new is not None and old != new:
                raise ValueError(
                    f"{to_camel(legacy)} (legacy) and {to_camel(current)} disagree ({old} vs {new})"
                )
            setattr(self, current, new if new is not None else old)
            setattr(self, legacy, None)
        if self.max_output_tokens is None:
            self.max_output_tokens = DEFAULTS.max_output_tokens
        if self.response_candidates_count is None:
            self.response_candidates_count = DEFAULTS.response_candidates_count
        return self


class DpoConfig(Camel):
    beta: float | None = None


class LossConfig(Camel):
    method: str = contract.LOSS_METHODS[DEFAULTS.loss_method]
    kl_beta: float | None = Field(None, **_limits("training.kl_beta"))
    dpo: DpoConfig | None = None

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        return contract.LOSS_METHODS[contract.loss_method(method)]

    @model_validator(mode="after")
    def _kl_only_for_grpo(self) -> LossConfig:
        method = contract.loss_method(self.method)
        if self.kl_beta and method != "grpo":
            raise ValueError(f"klBeta must be 0/unset when method is {self.method}")
        if not self.kl_beta:  # 0 and unset both mean the method's default, as on Fireworks
            self.kl_beta = contract.DEFAULT_KL_BETA[method]
        return self


class WandbConfig(Camel):
    enabled: bool = False
    api_key: str | None = None
    project: str | None = None
    entity: str | None = None
    run_id: str | None = None
    url: str | None = None
    mode: Literal["online", "offline"] | None = None
    """rftlab's local backend only: `offline` writes the W&B run to disk without contacting W&B."""
    group: str | None = Field(None, max_length=128)
    """rftlab's local backend only (as are `tags` and `config`): the W&B group, e.g. the sweep's name."""
    tags: list[str] | None = None
    config: dict[str, Any] | None = None
    """Extra W&B run config, e.g. a sweep point's overrides."""

    @field_validator("tags")
    @classmethod
    def _short_tags(cls, tags: list[str] | None) -> list[str] | None:
        too_long = [tag for tag in tags or [] if not 1 <= len(tag) <= 64]
        if too_long:
            raise ValueError(f"W&B tags must be 1 to 64 characters: {too_long[0]!r}")
        return tags


class AwsS3Config(Camel):
    credentials_secret: str | None = None
    iam_role_arn: str | None = None


class AzureBlobStorageConfig(Camel):
    credentials_secret: str | None = None
    managed_identity_client_id: str | None = None
    tenant_id: str | None = None


class JobRequest(Camel):
    dataset: str
    evaluator: str
    display_name: DisplayName | None = None
    evaluation_dataset: str | None = None
    eval_auto_carveout: bool = DEFAULTS.eval_auto_carveout
    eval_passes: list[str] | None = None
    """rftlab's local backend only: the passes measuring the eval reward (`contract.EVAL_PASSES`); unset: the
    contract's default, which GET does not echo (a job copied to Fireworks must not carry it)."""
    training_config: TrainingConfig
    inference_parameters: InferenceParameters = Field(default_factory=InferenceParameters)
    loss_config: LossConfig = Field(default_factory=LossConfig)
    chunk_size: int = DEFAULTS.chunk_size
    node_count: int = Field(DEFAULTS.node_count, **_limits("node_count"))
    max_concurrent_rollouts: int = Field(
        DEFAULTS.max_concurrent_rollouts, **_limits("max_concurrent_rollouts")
    )
    max_concurrent_evaluations: int = Field(
        DEFAULTS.max_concurrent_evaluations, **_limits("max_concurrent_evaluations")
    )
    max_inference_replica_count: int = Field(DEFAULTS.max_inference_replica_count, ge=1)
    mcp_server: str | None = None
    reservation_target: str | None = None
    wandb_config: WandbConfig | None = None
    aws_s3_config: AwsS3Config | None = None
    azure_blob_storage_config: AzureBlobStorageConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_output_only(cls, body: Any) -> Any:
        if isinstance(body, dict):
            return {key: value for key, value in body.items() if key not in JOB_OUTPUT_ONLY_FIELDS}
        return body

    @field_validator("chunk_size")
    @classmethod
    def _chunk_range(cls, size: int) -> int:
        low, high = contract.CHUNK_SIZE_RANGE
        if size == 0:
            return DEFAULTS.chunk_size
        if size != -1 and not low <= size <= high:
            raise ValueError(
                f"must be {low}..{high}, or -1 to disable chunking (0 = default {DEFAULTS.chunk_size})"
            )
        return size

    @field_validator("eval_passes")
    @classmethod
    def _known_passes(cls, passes: list[str] | None) -> list[str] | None:
        return None if passes is None else list(contract.eval_passes(passes))

    @field_validator("dataset", "evaluator")
    @classmethod
    def _required(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is required")
        return value


class DatasetBody(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    display_name: DisplayName | None = None
    format: Literal["FORMAT_UNSPECIFIED", "CHAT", "COMPLETION", "RL"] = "FORMAT_UNSPECIFIED"
    external_url: str | None = None


class DatasetCreate(Camel):
    dataset_id: str
    dataset: DatasetBody = Field(default_factory=DatasetBody)
    source_dataset_id: str | None = None
    filter: str | None = None


class CodeSnippets(Camel):
    language: str | None = None
    file_contents: dict[str, str] = Field(default_factory=dict)
    entry_file: str | None = None
    entry_func: str | None = None


class Criterion(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    type: str | None = None
    name: str | None = None
    description: str | None = None
    code_snippets: CodeSnippets | None = None


class EvaluatorBody(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    display_name: DisplayName | None = None
    description: str | None = None
    entry_point: str | None = None
    requirements: str | None = None
    commit_hash: str | None = None
    default_dataset: str | None = None
    criteria: list[Criterion] = Field(default_factory=list)


class EvaluatorCreate(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    evaluator_id: str | None = None
    evaluator: EvaluatorBody


class UploadEndpointRequest(Camel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
    filename_to_size: dict[str, int]

    @field_validator("filename_to_size")
    @classmethod
    def _one_file(cls, files: dict[str, int]) -> dict[str, int]:
        if len(files) != 1:
            raise ValueError("give exactly one file name and its size in bytes")
        name, size = next(iter(files.items()))
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"file name {name!r} must be a plain file name")
        if size < 0:
            raise ValueError("size must be ≥ 0")
        return files


def check_resource_id(value: str, field: str) -> str:
    if not RESOURCE_ID_PATTERN.match(value or ""):
        raise invalid(f"{field}: {value!r} is not a valid id ({RESOURCE_ID_RULE})")
    return value
