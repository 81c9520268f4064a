"""The local backend's W&B sink: a job's per-step metrics logged to the W&B run whose id is the job id.

`wandbConfig` on a job: Fireworks' `enabled`, `apiKey`, `project`, `entity`, `runId`, `url`, plus rftlab's
extensions that only this backend accepts: `mode` (`online` | `offline`), `group`, `tags`, `config`. The run is
written under `$WANDB_DIR` when the server has one, else in the job's folder of the state dir. Once the run exists
its address goes into the job's `wandbConfig.url`: the run's page online, the `file://` URL of the run folder
offline (what `wandb sync` uploads). An online run's API key reaches the job's worker process as `WANDB_API_KEY`
(the scheduler sets it from the job's stored secret; evaluator processes never inherit it): it is never put in the
run's config or in the job as the API returns it.

W&B trouble (no network, a refused key) costs the W&B run, never the training: the job goes on without it and the
server log says why.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import update

from rftlab.engine.api import JobOutcome, Reporter
from rftlab.server.store import Job, Store


class TrackedReporter:
    """The worker's Reporter, with every step's metrics also logged to the job's W&B run (when it has one)."""

    def __init__(self, inner: Reporter, run: Any = None) -> None:
        self.inner, self.run = inner, run

    def step(self, metrics: dict[str, float]) -> None:
        self.inner.step(metrics)
        if self.run is not None:
            self.run.log(dict(metrics), step=int(metrics["step"]))

    def progress(self, percent: float, epoch: int, step: int, total_steps: int, output_tokens: int) -> None:
        self.inner.progress(percent, epoch, step, total_steps, output_tokens)

    def rollouts(self, kind: str, step: int, rollouts: list[dict[str, Any]]) -> None:
        """Kept by the store; on W&B, one table per step (`rollouts/train`, `rollouts/eval`) holding them all."""
        self.inner.rollouts(kind, step, rollouts)
        if self.run is None:
            return
        try:
            # W&B drops a row logged below its current step: a chunk's rollouts may arrive after its last step
            table = rollouts_table(kind, step, rollouts)
            self.run.log({f"rollouts/{kind}": table}, step=max(step, self.run.step))
        except Exception as error:  # W&B is reporting, not training
            print(f"W&B rollouts table of step {step} not logged: {error}", file=sys.stderr, flush=True)

    def should_stop(self) -> bool:
        return self.inner.should_stop()

    def note(self, message: str) -> None:
        self.inner.note(message)

    def finish(self, outcome: JobOutcome) -> None:
        """The job's final metrics (what `outputMetrics` holds) as the run's summary."""
        if self.run is not None:
            self.run.summary.update(dict(outcome.final_metrics))


def run_address(run: Any) -> str:
    if not run.offline:
        return run.url
    # an offline run's files are in <dir>/wandb/offline-run-<time>-<id>/files
    return Path(run.dir).parent.resolve().as_uri()


def start_run(wandb_config: dict[str, Any], job_id: str, job_dir: Path) -> Any:
    import wandb  # imported only for jobs that use it

    mode = wandb_config.get("mode")
    settings = wandb.Settings(
        console="off",
        disable_git=True,
        save_code=False,
        silent=True,
        x_disable_stats=True,
    )
    run_dir = None if os.environ.get("WANDB_DIR") else job_dir
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        id=wandb_config.get("runId") or job_id,
        project=wandb_config.get("project"),
        entity=wandb_config.get("entity"),
        group=wandb_config.get("group"),
        tags=wandb_config.get("tags"),
        config={"job": job_id, **(wandb_config.get("config") or {})},
        dir=run_dir,
        mode=mode,
        resume="allow",  # a resumed job continues its run
        settings=settings,
    )


def record_address(store: Store, job_seq: int, address: str) -> None:
    with store.session() as session:
        job = session.get(Job, job_seq)
        if job is None:
            return
        spec = json.loads(json.dumps(job.spec))
        spec.setdefault("wandbConfig", {})["url"] = address
        session.execute(update(Job).where(Job.seq == job_seq).values(spec=spec, update_time=time.time()))


@contextmanager
def reporting(store: Store, job: Job, reporter: Reporter, job_dir: Path) -> Iterator[TrackedReporter]:
    """A Reporter for `run_job` that also logs to W&B when the job asks for it; the run ends with the block.
    An online run's key is the worker's `WANDB_API_KEY` (the scheduler sets it from the job's stored secret)."""
    wandb_config = job.spec.get("wandbConfig") or {}
    run = None
    if wandb_config.get("enabled"):
        try:
            run = start_run(wandb_config, job.job_id, job_dir)
            record_address(store, job.seq, run_address(run))
        except Exception as error:  # W&B is reporting, not training: go on without it
            print(f"W&B run not started, training goes on without it: {error}", file=sys.stderr, flush=True)
            run = None
    try:
        yield TrackedReporter(reporter, run)
    except BaseException:
        if run is not None:
            end_run(run, exit_code=1)
        raise
    if run is not None:
        end_run(run, exit_code=0)


def end_run(run: Any, exit_code: int) -> None:
    """Finish the run and wait until W&B has written all of it, so a finished job has a complete run."""
    import wandb

    run.finish(exit_code=exit_code)
    wandb.teardown(exit_code)


ROLLOUT_COLUMNS = (
    "step",
    "kind",
    "row",
    "group",
    "candidate",
    "reward",
    "valid",
    "reason",
    "finish_reason",
    "prompt",
    "completion",
    "advantage",
    "completion_tokens",
)


def rollouts_table(kind: str, step: int, rollouts: list[dict[str, Any]]) -> Any:
    import wandb

    def prompt(rollout: dict[str, Any]) -> str:
        users = [m for m in rollout.get("messages") or [] if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""

    rows = [
        [
            step,
            kind,
            r.get("row_index"),
            r.get("group"),
            r.get("candidate"),
            r.get("reward"),
            r.get("valid"),
            r.get("reason") or r.get("error") or "",
            r.get("finish_reason"),
            prompt(r),
            r.get("completion_text", ""),
            r.get("advantage"),
            r.get("completion_tokens"),
        ]
        for r in rollouts
    ]
    return wandb.Table(columns=list(ROLLOUT_COLUMNS), data=rows)
