"""The job's knobs as the engine takes them: typed and snake_case. The local backend builds them from the stored
job (`rftlab.server.job_spec`), with every default already applied; the engine never reads wire fields."""

from __future__ import annotations

from dataclasses import dataclass, field

from rftlab.fireworks.contract import DEFAULT_EVAL_PASSES, EvalPass, LossMethod

EVALUATOR_TIMEOUT_S = 60.0


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
    loss_method: LossMethod
    kl_beta: float


@dataclass(frozen=True)
class ToolSettings:
    """Multi-turn tool rollouts against one MCP server (streamable HTTP), a fresh session per rollout."""

    endpoint_url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Sent with every request (e.g. `Authorization`): never printed."""
    max_turns: int = 8
    """Assistant turns per rollout at most; a rollout still calling tools at the cap ends ("turns")."""
    call_timeout_s: float = 30.0
    max_result_tokens: int = 256
    """A tool result longer than this is cut (and counted)."""


@dataclass(frozen=True)
class JobSettings:
    training: TrainingSettings
    sampling: SamplingParams
    candidates: int
    """K: completions per row, the size of a group."""
    chunk_size: int
    """Rows per rollout round; -1 or more than the rows: the whole epoch."""
    eval_auto_carveout: bool
    evaluator_concurrency: int
    eval_passes: tuple[EvalPass, ...] = DEFAULT_EVAL_PASSES
    """Which eval passes measure the eval reward: "sampled" (at the job's temperature) and/or "greedy"."""
    tools: ToolSettings | None = None
    """Set when the job names an MCP server: rollouts are multi-turn and may call its tools."""
