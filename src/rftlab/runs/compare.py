"""`rftlab compare [DIR]`: which run of a sweep won.

Reads the run records of a sweep (or any launch, or a whole outputs/ tree), refreshing unfinished ones from the
backend, and shows one row per point: the job, the overrides that differ between the points, the state, the
training reward first -> last, the eval reward before -> after and the output model. Points that failed validation
or were refused by the backend are listed with their error. Writes `compare.csv` (one column per differing
override) and `rewards.png` (the training reward per step, one line per job, labelled by its overrides) into DIR.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table

from rftlab.fireworks.contract import FAILED, TERMINAL_STATES
from rftlab.fireworks.redact import redact_text
from rftlab.runs import overrides as ov
from rftlab.runs.follow import eval_rewards, final_metrics, short_state
from rftlab.runs.records import RunRecord, find_runs, latest_launch

CSV_NAME = "compare.csv"
PLOT_NAME = "rewards.png"
OUTPUTS = Path("outputs")


@dataclass
class Point:
    """One point of a sweep: a submitted job, a refused request or an invalid config."""

    job: str
    overrides: dict[str, str]
    state: str
    reward_first: float | None = None
    reward_last: float | None = None
    eval_before: float | None = None
    eval_after: float | None = None
    output_model: str = ""
    rewards: list[tuple[int, float]] = field(default_factory=list)
    """(step, reward_mean) of every step."""
    error: str = ""
    path: Path | None = None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def _submitted_point(record: RunRecord, job: dict[str, Any], metrics: list[dict[str, Any]]) -> Point:
    point = Point(record.job_id, ov.experiment_overrides(record.overrides), "", path=record.path)
    if record.kind != "submitted":
        point.state, point.error = record.kind, record.error
        return point
    point.state = short_state(job.get("state"))
    if job.get("state") == FAILED:
        point.error = (job.get("status") or {}).get("message", "")
    point.rewards = [
        (int(m["step"]), float(m["reward_mean"]))
        for m in metrics
        if _number(m.get("reward_mean")) is not None and "step" in m
    ]
    final = final_metrics(job)
    point.reward_first = _number(final.get("reward_first"))
    point.reward_last = _number(final.get("reward_last"))
    if point.reward_first is None and point.rewards:
        point.reward_first, point.reward_last = point.rewards[0][1], point.rewards[-1][1]
    rewards = eval_rewards(final)
    if rewards:
        point.eval_before, point.eval_after = _number(rewards[0]), _number(rewards[1])
    training = job.get("trainingConfig") or record.request_body.get("trainingConfig", {})
    point.output_model = training.get("outputModel") or ""
    return point


def _needs_refresh(record: RunRecord) -> bool:
    if record.kind != "submitted":
        return False  # nothing on the backend to ask about
    return record.state not in TERMINAL_STATES or not (record.path / "metrics.json").is_file()


def _recorded(record: RunRecord) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return record.job or {}, record.metrics


def invalid_points(root: Path) -> list[Point]:
    points = []
    for error_file in sorted(root.rglob("invalid-*/error.json")):
        error = RunRecord(error_file.parent).read_json("error.json") or {}
        points.append(
            Point(
                error_file.parent.name,
                ov.experiment_overrides(error.get("overrides", [])),
                "invalid",
                error="; ".join(error.get("problems", [])),
                path=error_file.parent,
            )
        )
    return points


def collect(root: Path, refresh: bool = True) -> list[Point]:
    """Every point under `root`; with `refresh`, unfinished jobs are asked for their state and metrics first."""
    records = find_runs(root)
    stale = [record for record in records if refresh and _needs_refresh(record)]
    fresh: dict[Path, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    if stale:
        import httpx

        from rftlab.fireworks.client import ApiError
        from rftlab.fireworks.credentials import CredentialsError
        from rftlab.runs.connect import Clients
        from rftlab.runs.follow import refresh as refresh_run
        from rftlab.server.daemon import LocalServerError

        with Clients() as clients:
            for record in stale:
                try:
                    fresh[record.path] = refresh_run(record, clients)
                except (ApiError, httpx.HTTPError, CredentialsError, LocalServerError, ValueError) as error:
                    sys.stderr.write(redact_text(f"{record.job_id}: not refreshed, as recorded: {error}\n"))
    points = [_submitted_point(record, *fresh.get(record.path, _recorded(record))) for record in records]
    return points + invalid_points(root)


def differing_keys(points: list[Point]) -> list[str]:
    if len(points) == 1:
        return list(points[0].overrides)
    return ov.varying([point.overrides for point in points])


def _pair(first: float | None, last: float | None) -> str:
    if first is None and last is None:
        return ""
    return " -> ".join("?" if value is None else f"{value:.3f}" for value in (first, last))


def table(points: list[Point], keys: list[str]) -> Table:
    view = Table(
        Column("job", no_wrap=True),
        Column("overrides", no_wrap=True),
        Column("state", no_wrap=True, min_width=len("completed")),
        Column("reward first -> last", no_wrap=True),
        Column("eval before -> after", no_wrap=True),
        Column("output model", no_wrap=True),
    )
    errors = any(point.error for point in points)
    if errors:
        view.add_column("error", overflow="fold")
    for point in points:
        view.add_row(
            point.job,
            ov.label(point.overrides, keys),
            point.state,
            _pair(point.reward_first, point.reward_last),
            _pair(point.eval_before, point.eval_after),
            point.output_model,
            *([redact_text(point.error)] if errors else []),
        )
    return view


def write_csv(points: list[Point], keys: list[str], path: Path) -> None:
    columns = [
        "job",
        *keys,
        "state",
        "reward_first",
        "reward_last",
        "eval_reward_before",
        "eval_reward_after",
    ]
    columns += ["output_model", "steps", "error", "record"]
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        for point in points:
            writer.writerow(
                [
                    point.job,
                    *(point.overrides.get(key, "") for key in keys),
                    point.state,
                    *("" if v is None else v for v in (point.reward_first, point.reward_last)),
                    *("" if v is None else v for v in (point.eval_before, point.eval_after)),
                    point.output_model,
                    len(point.rewards),
                    redact_text(point.error),
                    point.path or "",
                ]
            )


SMOOTHING_SHARE = 0.05
"""Long curves are drawn as a trailing moving average over this share of their steps: one step's reward is noisy."""


def moving_average(values: list[float], window: int) -> list[float]:
    averaged, total = [], 0.0
    for index, value in enumerate(values):
        total += value - (values[index - window] if index >= window else 0.0)
        averaged.append(total / min(index + 1, window))
    return averaged


def reward_figure(points: list[Point], keys: list[str]):
    """The training reward per step, one line per job that reported any, labelled by its differing overrides."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    longest = max((len(point.rewards) for point in points), default=0)
    window = max(1, round(longest * SMOOTHING_SHARE))
    for point in points:
        if point.rewards:
            steps, rewards = zip(*point.rewards, strict=True)
            axes.plot(
                steps,
                moving_average(list(rewards), window),
                marker="." if len(steps) < 30 else None,
                label=ov.label(point.overrides, keys) or point.job,
            )
    axes.set_xlabel("step")
    axes.set_ylabel("training reward" + (f" (mean of the last {window} steps)" if window > 1 else ""))
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    if axes.get_lines():
        axes.legend(fontsize="small")
    else:
        axes.text(
            0.5, 0.5, "no step metrics recorded yet", ha="center", va="center", transform=axes.transAxes
        )
    return figure


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rftlab compare",
        description=f"Compare the runs of a sweep: a table, {CSV_NAME} and {PLOT_NAME} written into DIR.",
    )
    parser.add_argument(
        "dir",
        nargs="?",
        type=Path,
        help="a sweep folder (outputs/<date>/<time>), a launch or an outputs folder (default: the latest launch)",
    )
    parser.add_argument(
        "--no-refresh", action="store_true", help="use the records as they are; contact nothing"
    )
    args = parser.parse_args(argv)
    root = args.dir or latest_launch(OUTPUTS)
    if root is None or not root.is_dir():
        sys.stderr.write(f"rftlab compare: {root or './outputs'}: no such folder; pass a sweep folder\n")
        return 1
    points = collect(root, refresh=not args.no_refresh)
    if not points:
        sys.stderr.write(f"rftlab compare: {root}: no run records here\n")
        return 1
    keys = differing_keys(points)
    Console(highlight=False, width=None if sys.stdout.isatty() else 220).print(table(points, keys))
    write_csv(points, keys, root / CSV_NAME)
    reward_figure(points, keys).savefig(root / PLOT_NAME, dpi=120)
    print(f"wrote {root / CSV_NAME} and {root / PLOT_NAME}")
    return 0
