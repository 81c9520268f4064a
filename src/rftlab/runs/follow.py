"""Follow jobs to their end with a live progress display; record each state change, the final job and metrics."""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from rftlab.fireworks.client import ApiError
from rftlab.fireworks.contract import FAILED, RUNNING, SUCCESSFUL_STATES, TERMINAL_STATES, WARNING_PREFIX
from rftlab.runs import wandb_link
from rftlab.runs.connect import Clients
from rftlab.runs.overrides import run_labels
from rftlab.runs.records import RunRecord


def wide_console() -> Console:
    """A console for tables: the terminal's width, or wide enough for job ids when output is piped."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def short_state(state: str | None) -> str:
    return (state or "?").removeprefix("JOB_STATE_").lower()


def final_metrics(job: dict[str, Any]) -> dict[str, Any]:
    """`outputMetrics` is a JSON string of the job's final metrics dict."""
    raw = job.get("outputMetrics")
    if not raw:
        return {}
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def eval_rewards(final: dict[str, Any]) -> tuple[float, float, str] | None:
    """(before, after, label) of the eval reward: the sampled pass's, else the greedy one's (label " (greedy)")
    for a job that measured only that pass; None when the job measured neither."""
    for key, label in (("eval_reward", ""), ("eval_reward_greedy", " (greedy)")):
        if f"{key}_before" in final and f"{key}_after" in final:
            return final[f"{key}_before"], final[f"{key}_after"], label
    return None


def eval_change(final: dict[str, Any]) -> str:
    """`before -> after` of the eval reward (the greedy pass's when the job measured only that one), or ""."""
    rewards = eval_rewards(final)
    return f"{rewards[0]:.3f} -> {rewards[1]:.3f}{rewards[2]}" if rewards else ""


def running_warning(job: dict[str, Any]) -> str:
    """What a running job's status warns about (replies cut off at maxOutputTokens, ...), or ""."""
    message = (job.get("status") or {}).get("message") or ""
    return message if job.get("state") == RUNNING and message.startswith(WARNING_PREFIX) else ""


def describe_progress(job: dict[str, Any], metrics: list[dict[str, Any]]) -> str:
    parts = [short_state(job.get("state"))]
    progress = job.get("jobProgress") or {}
    if metrics:
        last = metrics[-1]
        parts.append(f"step {last.get('step', len(metrics))}")
        if "reward_mean" in last:
            parts.append(f"reward {last['reward_mean']:.3f}")
    elif progress.get("epoch") is not None:
        parts.append(f"epoch {progress['epoch']}")
    evals = eval_change(final_metrics(job))
    if evals:
        parts.append(f"eval {evals}")
    message = (job.get("status") or {}).get("message")
    # a failure's reason, or what a finished job warns about (replies cut off at maxOutputTokens, ...)
    if message and (job.get("state") == FAILED or job.get("state") in SUCCESSFUL_STATES):
        parts.append(message)
    return ", ".join(parts)


def refresh(record: RunRecord, clients: Clients) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """GET the job (and its metrics) and record them; metrics.json is written once the job has ended."""
    client = clients.for_record(record)
    job = client.get_job(record.job_id)
    record.write_job(job)
    wandb_link.record_run(record, job)
    try:
        metrics = client.job_metrics(record.job_id)
    except ApiError:
        metrics = []
    if job.get("state") in TERMINAL_STATES:
        record.write_metrics(metrics)
    return job, metrics


PLAIN_LINE_EVERY_S = 30.0
"""Without a terminal (a log file, CI), how often at most a job's progress is printed as a line of its own."""


class PlainLines:
    """Progress as plain lines, for output that is not a terminal (where the live bar shows nothing until the end):
    a job's line on each state change, and at most every PLAIN_LINE_EVERY_S while its progress moves."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.shown: dict[str, tuple[str, str, float]] = {}

    def show(self, job_id: str, state: str, percent: float, description: str) -> None:
        last_state, last_description, last_time = self.shown.get(job_id, ("", "", -math.inf))
        now = time.monotonic()
        moved = description != last_description and now - last_time >= PLAIN_LINE_EVERY_S
        if state != last_state or moved:
            self.shown[job_id] = (state, description, now)
            line = f"{job_id} {percent:3.0f}% {description}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)  # one line, for grep


def follow(records: list[RunRecord], clients: Clients, poll_interval_s: float, quiet: bool = False) -> int:
    """Poll every job until all have ended, printing the first warning each shows while it runs (and, when
    stderr is not a terminal, progress lines). Exit status 0 when all completed (or stopped early), else 1."""
    console = Console(file=sys.stderr)
    lines = PlainLines(console) if not console.is_terminal and not quiet else None
    states: dict[str, str] = {}
    warned: set[str] = set()
    progress = Progress(
        TextColumn("{task.fields[job]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=quiet,
    )
    labels = run_labels(records)
    tasks: dict[str, TaskID] = {
        r.job_id: progress.add_task("", total=100, job=f"{r.job_id} {labels[r.job_id]}".strip())
        for r in records
    }
    pending = list(records)
    with progress:
        while pending:
            for record in list(pending):
                try:
                    job, metrics = refresh(record, clients)
                except ApiError as err:
                    progress.update(tasks[record.job_id], description=f"unreachable: {err.message}")
                    continue
                state = job.get("state", "")
                percent = (job.get("jobProgress") or {}).get("percent") or 0
                if state in SUCCESSFUL_STATES:
                    percent = 100
                description = describe_progress(job, metrics)
                progress.update(tasks[record.job_id], completed=percent, description=description)
                if lines:
                    lines.show(record.job_id, state, percent, description)
                warning = running_warning(job)
                if warning and record.job_id not in warned and not quiet:
                    warned.add(record.job_id)
                    progress.console.print(
                        f"{record.job_id}: {warning}", markup=False, highlight=False, soft_wrap=True
                    )
                if state in TERMINAL_STATES:
                    states[record.job_id] = state
                    pending.remove(record)
            if pending:
                time.sleep(poll_interval_s)
    return 0 if all(state in SUCCESSFUL_STATES for state in states.values()) else 1


def _status_row(run: RunRecord, clients: Clients | None) -> list[str]:
    if run.kind != "submitted":
        return [run.job_id, run.kind, "", "", "", "", run.error or "nothing was sent"]
    job, metrics = run.job or {}, run.metrics
    if clients is not None:
        try:
            job, metrics = refresh(run, clients)
        except ApiError as err:
            return [run.job_id, f"unreachable ({short_state(job.get('state'))})", "", "", "", "", err.message]
    progress = job.get("jobProgress") or {}
    step = metrics[-1].get("step", len(metrics)) if metrics else progress.get("step")
    reward = metrics[-1].get("reward_mean") if metrics else None
    evals = eval_change(final_metrics(job))
    percent = progress.get("percent")
    return [
        run.job_id,
        short_state(job.get("state"))
        + (f" {percent:.0f}%" if percent is not None and job.get("state") not in TERMINAL_STATES else ""),
        "" if step is None else str(step),
        "" if reward is None else f"{reward:.3f}",
        evals,
        (job.get("trainingConfig") or {}).get("outputModel", ""),
        (job.get("status") or {}).get("message", ""),
    ]


def status_table(runs: list[RunRecord], clients: Clients | None = None) -> Table:
    """One row per run: refreshed from the backend with `clients`, else as recorded."""
    table = Table("job", "state", "step", "reward", "eval before -> after", "output model", "note")
    folders = sorted({str(run.path.parent) for run in runs})
    table.caption = ", ".join(folders)
    for run in runs:
        table.add_row(*_status_row(run, clients))
    return table


def dashboard_links(runs: list[RunRecord]) -> str:
    """Each submitted run's page (the local backend's dashboard, or Fireworks' web app), one per line."""
    return "\n".join(f"{run.job_id}  {run.dashboard_url}" for run in runs if run.kind == "submitted")
