"""Fireworks' RFT wire contract, written once: job states, loss methods, resource ids, the defaults a backend
applies to an unset field, and the bounds of every tunable field (the local backend's and the hosted service's).

The launcher (`rftlab.launch`), the local backend (`rftlab.server`) and the engine's settings all read these
names; nothing else spells a job state, a loss method or a default. Sources: ../shared/reference (firectl flags,
REST shapes, documented ranges).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

# -- job states ------------------------------------------------------------------------------------------------
PENDING = "JOB_STATE_PENDING"
VALIDATING = "JOB_STATE_VALIDATING"
RUNNING = "JOB_STATE_RUNNING"
COMPLETED = "JOB_STATE_COMPLETED"
FAILED = "JOB_STATE_FAILED"
CANCELLED = "JOB_STATE_CANCELLED"
EARLY_STOPPED = "JOB_STATE_EARLY_STOPPED"
EXPIRED = "JOB_STATE_EXPIRED"

ACTIVE_STATES = (VALIDATING, RUNNING)
"""A worker holds the job."""
TERMINAL_STATES = frozenset({COMPLETED, FAILED, CANCELLED, EARLY_STOPPED, EXPIRED})
SUCCESSFUL_STATES = frozenset({COMPLETED, EARLY_STOPPED})
"""Ended with an output model."""
RESUMABLE_STATES = (FAILED, CANCELLED)

# -- loss methods: the config/firectl spelling -> the wire enum ------------------------------------------------
LossMethod = Literal["grpo", "dapo", "gspo-token"]
LOSS_METHODS: dict[str, str] = {"grpo": "GRPO", "dapo": "DAPO", "gspo-token": "GSPO_TOKEN"}
DEFAULT_KL_BETA: dict[str, float] = {"grpo": 0.001, "dapo": 0.0, "gspo-token": 0.0}
"""What `klBeta` 0 or unset means for each method (Fireworks rejects a non-zero klBeta except with GRPO)."""


def loss_method(spelling: str) -> LossMethod:
    """`GRPO`, `grpo`, `gspo_token`, `METHOD_UNSPECIFIED`... -> the config spelling; ValueError otherwise."""
    folded = spelling.strip().lower().replace("_", "-")
    if folded == "method-unspecified":
        return "grpo"
    if folded not in LOSS_METHODS:
        raise ValueError(f"must be one of {', '.join(LOSS_METHODS.values())} (or {', '.join(LOSS_METHODS)})")
    return folded  # type: ignore[return-value]


# -- resource ids ----------------------------------------------------------------------------------------------
RESOURCE_ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
RESOURCE_ID_RULE = "lowercase letters, digits and '-', starting with a letter, at most 63 characters"
MAX_ID_LEN = 63


# -- defaults --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobDefaults:
    """What a backend uses for a field the create request leaves unset (Fireworks' documented defaults)."""

    epochs: int = 1
    learning_rate: float = 1e-4
    max_context_length: int = 8192
    batch_size: int = 32768
    batch_size_samples: int = 0
    gradient_accumulation_steps: int = 1
    learning_rate_warmup_steps: int = 0
    optimizer_weight_decay: float = 0.01
    lora_rank: int = 8
    loss_method: LossMethod = "grpo"
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 40
    response_candidates_count: int = 8
    max_output_tokens: int = 2048
    chunk_size: int = 200
    eval_auto_carveout: bool = True
    node_count: int = 1
    max_concurrent_rollouts: int = 96
    max_concurrent_evaluations: int = 96
    max_inference_replica_count: int = 1


DEFAULTS = JobDefaults()


# -- evaluation passes (rftlab's local backend only) ------------------------------------------------------------
EvalPass = Literal["sampled", "greedy"]
EVAL_PASSES: dict[str, str] = {
    "sampled": "one reply per eval row at the job's temperature (eval_reward)",
    "greedy": "one reply per eval row at temperature 0 (eval_reward_greedy): steadier, not what training samples",
}
"""The passes that measure the eval reward, before training and after each epoch: each costs a full round of
sampling and scoring over the eval rows, so two passes take twice the evaluation time of one."""
DEFAULT_EVAL_PASSES: tuple[EvalPass, ...] = ("sampled",)
EVAL_PASSES_RULE = f"a non-empty list of {' and/or '.join(EVAL_PASSES)} without repeats, e.g. [greedy]"


def eval_passes(names: Any) -> tuple[EvalPass, ...]:
    """Checked pass names (a single name counts as a list of one); ValueError saying what is allowed."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"must be {EVAL_PASSES_RULE}")
    unknown = [name for name in names if not isinstance(name, str) or name not in EVAL_PASSES]
    if unknown:
        raise ValueError(f"unknown pass {unknown[0]!r}: must be {EVAL_PASSES_RULE}")
    if len(set(names)) != len(names):
        raise ValueError(f"lists a pass twice: must be {EVAL_PASSES_RULE}")
    return tuple(names)


# -- status messages -------------------------------------------------------------------------------------------
WARNING_PREFIX = "warning: "
"""How a running job's status message that warns (rather than reports progress) begins on rftlab's local backend:
the launcher prints such a message once while it follows the job."""


# -- bounds ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """An inclusive range (`gt` makes the low end exclusive); None: unbounded on that side."""

    low: float | None = None
    high: float | None = None
    gt: bool = False
    power_of_two: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of range, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # type problems are the schema's to report
        if self.low is not None and (value <= self.low if self.gt else value < self.low):
            return f"must be {'above' if self.gt else 'at least'} {self.low:g}{self._range()}"
        if self.high is not None and value > self.high:
            return f"must be at most {self.high:g}{self._range()}"
        if self.power_of_two and (int(value) != value or value < 1 or int(value) & (int(value) - 1)):
            return f"must be a power of two{self._range()}"
        return None

    def _range(self) -> str:
        if self.low is None or self.high is None:
            return ""
        return f" ({'>' if self.gt else ''}{self.low:g} to {self.high:g})"


Backend = Literal["local", "fireworks"]

FIELD_BOUNDS: dict[str, dict[Backend, Bound]] = {
    # config key: (the wire field it renders to is in rftlab.launch.render)
    "training.epochs": {"local": Bound(1, 1000), "fireworks": Bound(1, 10)},
    "training.learning_rate": {"local": Bound(0, 1, gt=True), "fireworks": Bound(1e-5, 5e-4)},
    "training.lora_rank": {
        "local": Bound(1, 256, power_of_two=True),
        "fireworks": Bound(4, 32, power_of_two=True),
    },
    "training.max_context_length": {"local": Bound(16, 131072), "fireworks": Bound(16, 131072)},
    "training.batch_size": {"local": Bound(16), "fireworks": Bound(16)},
    "training.batch_size_samples": {"local": Bound(0), "fireworks": Bound(0)},
    "training.gradient_accumulation_steps": {"local": Bound(1, 1024), "fireworks": Bound(1, 1024)},
    "training.learning_rate_warmup_steps": {"local": Bound(0), "fireworks": Bound(0)},
    "training.optimizer_weight_decay": {"local": Bound(0, 1), "fireworks": Bound(0, 1)},
    "training.kl_beta": {"local": Bound(0, 10), "fireworks": Bound(0, 10)},
    "sampling.temperature": {"local": Bound(0, 10, gt=True), "fireworks": Bound(0.1, 2.0)},
    "sampling.top_p": {"local": Bound(0, 1, gt=True), "fireworks": Bound(0, 1, gt=True)},
    "sampling.top_k": {"local": Bound(0, 1000), "fireworks": Bound(0, 100)},
    "sampling.response_candidates_count": {"local": Bound(2, 256), "fireworks": Bound(2, 256)},
    "sampling.max_output_tokens": {"local": Bound(0, 65536), "fireworks": Bound(0, 16384)},
    "max_concurrent_rollouts": {"local": Bound(1, 1024), "fireworks": Bound(1, 1024)},
    "max_concurrent_evaluations": {"local": Bound(1, 1024), "fireworks": Bound(1, 1024)},
    "node_count": {"local": Bound(1, 64), "fireworks": Bound(1, 64)},
}
"""Every bound a backend enforces, by the launcher's config key. The local backend's schema builds its limits
from the `local` column, so the launcher can refuse what a backend would refuse before uploading anything."""

CHUNK_SIZE_RANGE = (1, 10_000)
"""chunkSize: 1..10000 rows, or -1 (no chunking); 0 means the default."""


def bound(key: str, backend: Backend = "local") -> Bound:
    return FIELD_BOUNDS[key][backend]
