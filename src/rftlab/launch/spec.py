"""The launch config's schema: what `conf/` may say, checked before anything is sent.

Field names are the snake_case config keys; `rftlab.launch.render` maps them to Fireworks' camelCase request body.
Every problem is reported as `key=value: what is allowed`, all of them at once.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from rftlab.fireworks import contract
from rftlab.fireworks.contract import EvalPass, LossMethod


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackendSpec(Section):
    kind: Literal["local", "fireworks"]
    base_url: str = Field(pattern=r"^https?://")
    account_id: str | None = None
    profile: str | None = None
    max_in_flight: int = Field(4, ge=1)
    poll_interval_s: float = Field(2.0, gt=0)


class ModelSpec(Section):
    base_model: str | None = None
    warm_start_from: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelSpec:
        if (self.base_model is None) == (self.warm_start_from is None):
            raise ValueError(
                "set exactly one of base_model and warm_start_from "
                f"(got base_model={self.base_model!r}, warm_start_from={self.warm_start_from!r})"
            )
        return self


class DatasetSpec(Section):
    path: str | None = None
    max_rows: int | None = Field(None, ge=1, strict=True)
    """Upload only the first N rows of `path` (a quick experiment); None: all of them."""
    id: str | None = None
    evaluation_path: str | None = None
    evaluation_dataset: str | None = None
    eval_auto_carveout: bool = True

    @model_validator(mode="after")
    def _one_source_each(self) -> DatasetSpec:
        if (self.path is None) == (self.id is None):
            raise ValueError(
                "required: set exactly one of path (a local JSONL file) and id (an existing dataset) "
                f"(got path={self.path!r}, id={self.id!r})"
            )
        if self.max_rows is not None and self.path is None:
            raise ValueError(
                f"max_rows={self.max_rows} cuts a local file (path); a dataset named by id={self.id!r} is "
                "already on the backend: drop dataset.max_rows, or use dataset.path"
            )
        if self.evaluation_path is not None and self.evaluation_dataset is not None:
            raise ValueError(
                "set at most one of evaluation_path and evaluation_dataset "
                f"(got {self.evaluation_path!r} and {self.evaluation_dataset!r})"
            )
        return self


class EvaluatorSpec(Section):
    path: str | None = None
    entry_func: str | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EvaluatorSpec:
        if (self.path is None) == (self.id is None):
            raise ValueError(
                "required: set exactly one of path (a Python file) and id (an existing evaluator) "
                f"(got path={self.path!r}, id={self.id!r})"
            )
        if self.path is not None and not self.entry_func:
            raise ValueError(f"entry_func is empty: name the function in {self.path} that scores a rollout")
        return self


class SamplingSpec(Section):
    temperature: float
    top_p: float
    top_k: int
    response_candidates_count: int
    max_output_tokens: int
    extra_body: dict[str, Any] | None = None

    @field_validator("extra_body", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(f'must be a JSON object, e.g. \'{{"stop": ["\\n"]}}\' ({err.msg})') from err
        if value is not None and not isinstance(value, dict):
            raise ValueError('must be a JSON object, e.g. {"stop": ["\\n"]}')
        return value


class TrainingSpec(Section):
    epochs: int
    learning_rate: float
    max_context_length: int
    batch_size: int
    batch_size_samples: int | None = None
    gradient_accumulation_steps: int
    learning_rate_warmup_steps: int
    optimizer_weight_decay: float | None = None
    lora_rank: int
    loss_method: LossMethod
    kl_beta: float
    chunk_size: int

    @field_validator("chunk_size")
    @classmethod
    def _chunk(cls, value: int) -> int:
        if value != -1 and value < 1:
            raise ValueError("must be at least 1 (rows per rollout round), or -1 to disable chunking")
        return value

    @model_validator(mode="after")
    def _kl_only_with_grpo(self) -> TrainingSpec:
        if self.kl_beta > 0 and self.loss_method != "grpo":
            raise ValueError(
                f"kl_beta={self.kl_beta} with loss_method={self.loss_method}: a KL term exists only with "
                f"grpo; set training.kl_beta=0 or training.loss_method=grpo"
            )
        return self


class WandbSpec(Section):
    enabled: bool = False
    mode: Literal["online", "offline"] = "online"
    project: str | None = None
    entity: str | None = None

    @model_validator(mode="after")
    def _together(self, info: ValidationInfo) -> WandbSpec:
        if self.enabled:
            online = self.mode == "online"
            missing = [
                how
                for how, present in (
                    ("wandb.project (set wandb.project=NAME or export WANDB_PROJECT=NAME)", self.project),
                    (
                        "wandb.entity (set wandb.entity=TEAM or export WANDB_ENTITY=TEAM)",
                        self.entity or not online,
                    ),
                    (
                        "WANDB_API_KEY (export WANDB_API_KEY=...)",
                        not online or (info.context or {}).get("wandb_api_key_set"),
                    ),
                )
                if not present
            ]
            if missing:
                needs = "a project, an entity and WANDB_API_KEY" if online else "a project"
                raise ValueError(
                    f"wandb={'on' if online else 'offline'} needs {needs}; missing: {', '.join(missing)}; "
                    "or turn W&B off with wandb=off"
                )
        elif self.project or self.entity:
            raise ValueError(
                f"wandb.project={self.project!r}, wandb.entity={self.entity!r} set while W&B is off: "
                "use wandb=on (or wandb=offline), or clear them"
            )
        return self


class McpServerSpec(Section):
    """The MCP server a job's rollouts may call (`mcp_server` group): none, an existing resource, or an endpoint
    URL that the launcher registers."""

    id: str | None = None
    url: str | None = Field(None, pattern=r"^https?://")
    auth: Literal["OPEN", "API_KEY", "BEARER_TOKEN"] = "OPEN"
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    bundled: Literal["calculator"] | None = None

    @model_validator(mode="after")
    def _one_way_to_name_it(self) -> McpServerSpec:
        if self.id and self.url:
            raise ValueError(f"set one of id and url, not both (id={self.id!r}, url={self.url!r})")
        if (self.auth == "OPEN") != (self.api_key_env is None):
            raise ValueError(
                f"auth={self.auth} needs api_key_env (the environment variable holding the key) "
                "exactly when it is not OPEN"
            )
        if self.api_key_env and not self.url:
            raise ValueError("api_key_env is for a server given by url (an existing id has its own key)")
        return self


class RunSpec(Section):
    backend: BackendSpec
    model: ModelSpec
    dataset: DatasetSpec
    evaluator: EvaluatorSpec
    sampling: SamplingSpec
    training: TrainingSpec
    wandb: WandbSpec
    job_id: str | None = Field(None, pattern=contract.RESOURCE_ID_PATTERN.pattern)
    output_model: str | None = None
    display_name: str | None = Field(None, min_length=1, max_length=255)
    mcp_server: McpServerSpec = McpServerSpec()
    eval_passes: tuple[EvalPass, ...] | None = None
    """rftlab's local backend only; None: the backend's default (`contract.DEFAULT_EVAL_PASSES`)."""
    max_concurrent_rollouts: int | None = None
    max_concurrent_evaluations: int | None = None
    node_count: int | None = None
    source_job: str | None = Field(None, min_length=1)
    dry_run: bool = False
    wait: bool = False
    output: Literal["text", "json", "flag"] = "text"
    quiet: bool = False

    @field_validator("output_model")
    @classmethod
    def _model_id(cls, name: str | None) -> str | None:
        """A model id, or `accounts/<account>/models/<id>`: what the backend takes as `trainingConfig.outputModel`."""
        if name is None:
            return name
        parts = name.split("/")
        model_id = parts[3] if len(parts) == 4 and parts[0] == "accounts" and parts[2] == "models" else name
        if not contract.RESOURCE_ID_PATTERN.match(model_id):
            raise ValueError(
                f"must be a model id ({contract.RESOURCE_ID_RULE}) or accounts/<account>/models/<id>"
            )
        return name

    @field_validator("eval_passes", mode="before")
    @classmethod
    def _passes(cls, passes: Any) -> Any:
        return None if passes is None else contract.eval_passes(passes)

    @model_validator(mode="after")
    def _eval_passes_are_local(self) -> RunSpec:
        if self.eval_passes is not None and self.backend.kind != "local":
            raise ValueError(
                f"eval_passes=[{','.join(self.eval_passes)}] works with backend=local only (Fireworks measures "
                "the eval reward its own way): drop it (eval_passes=null) with backend=fireworks"
            )
        return self

    @model_validator(mode="after")
    def _offline_wandb_is_local(self) -> RunSpec:
        if self.wandb.enabled and self.wandb.mode == "offline" and self.backend.kind != "local":
            raise ValueError(
                "wandb=offline works with backend=local only; use wandb=on with backend=fireworks"
            )
        return self


class ConfigProblem(BaseModel):
    key: str
    """Dotted config key, or the section for a rule across several of its keys ("" for the whole config)."""
    message: str
    value: Any = None
    has_value: bool = True

    def __str__(self) -> str:
        where = f"{self.key}={json.dumps(self.value, default=str)}" if self.has_value else self.key
        return f"{where}: {self.message}" if where else self.message


class SpecError(ValueError):
    """Invalid config: one line per problem, each naming the key, the value and what is allowed."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _problem(error: dict[str, Any]) -> ConfigProblem:
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = RunSpec
        for part in loc[:-1]:
            section = section.model_fields[part].annotation  # type: ignore[assignment]
        message = f"unknown key; allowed keys here: {', '.join(section.model_fields)}"
    elif error["type"] == "missing":
        return ConfigProblem(
            key=key, message="required; set it in the config or on the command line", has_value=False
        )
    if error["type"] == "value_error" and isinstance(error["input"], dict):
        # a rule across several keys of one section: the message names them
        return ConfigProblem(key=key, message=message, has_value=False)
    return ConfigProblem(key=key, value=error["input"], message=message)


def bound_problems(config: dict[str, Any]) -> list[ConfigProblem]:
    """The values outside what the chosen backend accepts (the contract's bounds for that backend)."""
    backend = (config.get("backend") or {}).get("kind")
    if backend not in ("local", "fireworks"):
        return []  # the schema reports the backend itself
    problems = []
    for key, bounds in contract.FIELD_BOUNDS.items():
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        why = bounds[backend].problem(value) if value is not None else None
        if why:
            where = "" if backend == "local" else " on Fireworks"
            problems.append(ConfigProblem(key=key, value=value, message=why + where))
    return problems


def _position(key: str) -> tuple[int, int]:
    """Where `key` sits in the config schema, so problems read in the config's order."""
    section, _, rest = key.partition(".")
    fields = list(RunSpec.model_fields)
    if section not in fields:
        return (len(fields), 0)
    annotation = RunSpec.model_fields[section].annotation
    inner = list(getattr(annotation, "model_fields", {}))
    name = rest.partition(".")[0]
    return (fields.index(section), inner.index(name) if name in inner else len(inner))


def validate(config: dict[str, Any], wandb_api_key_set: bool) -> RunSpec:
    """The resolved config as a `RunSpec`, or `SpecError` listing every problem. The W&B key is never config;
    whether `WANDB_API_KEY` is set decides whether online W&B settings are complete."""
    problems = bound_problems(config)
    try:
        spec = RunSpec.model_validate(config, context={"wandb_api_key_set": wandb_api_key_set})
    except ValidationError as err:
        problems += [_problem(e) for e in err.errors(include_url=False)]
    if problems:
        raise SpecError(sorted(problems, key=lambda problem: _position(problem.key)))
    return spec
