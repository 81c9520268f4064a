"""The boundary between the local backend's job worker and the engine.

The worker (rftlab.server.worker) builds a `JobInputs` from a stored job, passes a `Reporter`, and calls
`rftlab.engine.job.run_job(inputs, reporter)`. The engine knows nothing about HTTP or the database; the worker
knows nothing about tensors.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rftlab.engine.settings import JobSettings
from rftlab.fireworks.contract import CANCELLED, COMPLETED, EARLY_STOPPED


@dataclass(frozen=True)
class EvaluatorCode:
    """A folder holding the user's evaluator; `entry_file` (relative) defines `entry_func`."""

    root: Path
    entry_file: str
    entry_func: str
    python: Path = Path(sys.executable)
    """The interpreter of the evaluator's environment (its requirements installed), else the server's."""
    env: dict[str, str] = field(default_factory=dict, repr=False)
    """Environment variables the evaluator's processes get: its account's secrets."""


@dataclass(frozen=True)
class JobInputs:
    settings: JobSettings
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] | None
    """Rows of `evaluationDataset`; None means carve out of train_rows when `evalAutoCarveout` is set."""
    evaluator: EvaluatorCode
    base_model: str
    """A local Hugging Face folder, `tiny-arith`, a Fireworks model name, or a hub id (resolved by the engine)."""
    warm_start_adapter: Path | None
    checkpoint_dir: Path
    """Per-job folder for step checkpoints; a resumed job finds its last checkpoint here."""
    output_dir: Path
    """Where the final PEFT adapter (the output model) is written."""
    seed: int = 0


OUTCOME_STATES = (COMPLETED, EARLY_STOPPED, CANCELLED)


@dataclass
class JobOutcome:
    state: str
    """One of OUTCOME_STATES."""
    """CANCELLED when `Reporter.should_stop()` turned true: the last checkpoint holds everything done so far."""
    message: str = ""
    final_metrics: dict[str, float] = field(default_factory=dict)
    """Includes `eval_reward_before` and `eval_reward_after` when an eval set exists (`eval_reward_greedy_before`
    and `_after` for the greedy pass, when `eval_passes` names it)."""


class Reporter(Protocol):
    def step(self, metrics: dict[str, float]) -> None:
        """One optimizer step finished: its metrics (`step`, `epoch`, `reward_mean`, `loss`, ...)."""

    def progress(self, percent: float, epoch: int, step: int, total_steps: int, output_tokens: int) -> None:
        """Coarse progress for `jobProgress`."""

    def rollouts(self, kind: str, step: int, rollouts: list[dict[str, Any]]) -> None:
        """The rollouts of a step (`kind` "train"), or of an eval pass after `step` steps (`kind` "eval"), each
        as `Rollout.record()` gives it."""

    def should_stop(self) -> bool:
        """True once the job was cancelled: the engine stops within one step, after checkpointing."""

    def note(self, message: str) -> None:
        """A warning about the running job (it starts with `contract.WARNING_PREFIX`), for its status until a
        later note or the job's end replaces it."""


class JobFailed(RuntimeError):
    """A failure whose message is the job's `status.message` (the evaluator's own error, a bad row...)."""
