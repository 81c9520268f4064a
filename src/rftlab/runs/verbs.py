"""The verbs beside `launch`, working from run records: relaunch, status, wait, cancel, runs.

A DIR argument may be one run folder, a launch (sweep) folder, or a whole outputs/ tree; without one, the latest
launch under ./outputs is used.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from rich.table import Table

from rftlab.fireworks.redact import redact_text
from rftlab.runs.follow import dashboard_links, status_table, wide_console
from rftlab.runs.records import RunRecord, find_runs, latest_launch, new_launch_dir

OUTPUTS = Path("outputs")
DIR_HELP = (
    "a run (outputs/<date>/<time>/<job id>), a launch or sweep (outputs/<date>/<time>) or a whole outputs "
    "folder; default: the latest launch under ./outputs"
)


def _fail(message: str) -> int:
    sys.stderr.write(redact_text(message) + "\n")
    return 1


def _runs_in(target: str | None) -> list[RunRecord]:
    root = Path(target) if target else latest_launch(OUTPUTS)
    if root is None:
        raise SystemExit(_fail("rftlab: no runs under ./outputs; pass a run or sweep folder"))
    if not root.exists():
        raise SystemExit(_fail(f"rftlab: {root}: no such folder"))
    runs = find_runs(root)
    if not runs:
        raise SystemExit(_fail(f"rftlab: {root}: no run records (folders with request.json) here"))
    return runs


def _submitted(runs: list[RunRecord]) -> list[RunRecord]:
    """The runs with a job on the backend: not dry runs, nor requests the backend refused (no job.json)."""
    return [run for run in runs if run.kind == "submitted"]


def relaunch(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rftlab relaunch",
        description="Render a recorded run's config again; submit it when the request is byte-identical to the "
        "recorded request.json (a changed dataset or evaluator file changes the request and is refused).",
    )
    parser.add_argument("run_dir", type=Path, help="a run folder: outputs/<date>/<time>/<job id>")
    parser.add_argument("--dry-run", action="store_true", help="print the request, send nothing")
    parser.add_argument("--wait", action="store_true", help="follow the job to its end")
    parser.add_argument(
        "--output",
        choices=["text", "json", "flag"],
        default=None,
        help="as launch's output= (default: recorded)",
    )
    args = parser.parse_args(argv)

    from rftlab.launch import run as launch
    from rftlab.launch.compose import Composed
    from rftlab.launch.plan import build_plan
    from rftlab.launch.spec import SpecError

    record = RunRecord(args.run_dir)
    if not record.exists():
        return _fail(f"rftlab relaunch: {args.run_dir} holds no request.json; pass a run folder")
    config = record.read_config()
    config.update(dry_run=args.dry_run, wait=args.wait or config.get("wait", False))
    if args.output:
        config["output"] = args.output
    try:
        plan = build_plan(config, Path.cwd(), record.overrides)
    except SpecError as err:
        return _fail(f"rftlab relaunch: the recorded config no longer validates:\n{err}")
    recorded, rendered = record.request_text(), redact_text(plan.request_json())
    if rendered != recorded:
        diff = difflib.unified_diff(
            recorded.splitlines(), rendered.splitlines(), "recorded request.json", "rendered now", lineterm=""
        )
        return _fail(
            "rftlab relaunch: the request differs from the record (inputs changed?):\n" + "\n".join(diff)
        )
    composed = Composed(launch_dir=new_launch_dir(OUTPUTS), cwd=Path.cwd(), plans=[plan])
    return launch.run(composed)


def status(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rftlab status",
        description="A table of runs (state, step, reward), refreshed from the backend each run was sent to.",
    )
    parser.add_argument("dir", nargs="?", help=DIR_HELP)
    parser.add_argument("--no-refresh", action="store_true", help="show the recorded state; contact nothing")
    args = parser.parse_args(argv)
    runs_here = _runs_in(args.dir)
    if args.no_refresh:
        wide_console().print(status_table(runs_here))
    else:
        from rftlab.runs.connect import Clients

        with Clients() as clients:
            wide_console().print(status_table(runs_here, clients))
    links = dashboard_links(runs_here)
    if links:
        print(f"dashboard:\n{links}")
    return 0


def wait(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rftlab wait",
        description="Follow runs (all jobs of a sweep in one live table) until they end; record each final job "
        "and its metrics (job.json, metrics.json). Exit status 1 when a job failed or was cancelled.",
    )
    parser.add_argument("dir", nargs="?", help=DIR_HELP)
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between refreshes (default: 2)")
    parser.add_argument("--quiet", action="store_true", help="no live table; errors only")
    args = parser.parse_args(argv)

    from rftlab.runs.connect import Clients
    from rftlab.runs.follow import follow

    runs = _submitted(_runs_in(args.dir))
    if not runs:
        return _fail("rftlab wait: only dry runs here; nothing was submitted")
    with Clients() as clients:
        code = follow(runs, clients, args.poll, quiet=args.quiet)
    if not args.quiet:
        wide_console().print(status_table(runs))
    return code


def cancel(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rftlab cancel",
        description="Cancel the unfinished jobs of runs (all of a sweep with its folder).",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run, launch or sweep folders under outputs/")
    args = parser.parse_args(argv)

    from rftlab.fireworks.client import ApiError
    from rftlab.runs.connect import Clients
    from rftlab.runs.follow import short_state

    code = 0
    with Clients() as clients:
        for target in args.dirs:
            for run in _submitted(_runs_in(target)):
                if run.is_terminal():
                    print(f"{run.job_id}: already {short_state(run.state)}")
                    continue
                try:
                    job = clients.for_record(run).cancel_job(run.job_id)
                except ApiError as err:
                    code = _fail(f"{run.job_id}: {err.message}")
                    continue
                run.write_job(job)
                print(f"{run.job_id}: {short_state(job.get('state'))}")
    return code


def runs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rftlab runs", description="Recent runs and their recorded states.")
    parser.add_argument("dir", nargs="?", default=str(OUTPUTS), help="an outputs folder (default: ./outputs)")
    parser.add_argument("--limit", type=int, default=20, help="show the N most recent runs (default: 20)")
    args = parser.parse_args(argv)

    from rftlab.runs.follow import short_state

    found = find_runs(Path(args.dir)) if Path(args.dir).is_dir() else []
    table = Table("launch", "job", "state", "model", "overrides")
    for run in found[-args.limit :]:
        training = run.request_body.get("trainingConfig", {})
        state = short_state(run.state) if run.kind == "submitted" else run.kind
        model = training.get("baseModel") or training.get("warmStartFrom") or ""
        table.add_row(str(run.path.parent), run.job_id, state, model, " ".join(run.overrides))
    wide_console().print(table if found else f"no runs under {args.dir}")
    return 0
