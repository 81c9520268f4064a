"""Carry out a composed launch: record every plan, then print it (dry run) or submit it and, with wait=true,
follow it to the end."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rftlab.fireworks.redact import redact, redact_text
from rftlab.launch import render
from rftlab.launch.compose import Composed
from rftlab.launch.plan import UNKNOWN_ACCOUNT, Plan
from rftlab.runs.records import RunRecord, git_state, now_iso, package_versions, write_invalid_point


def echo(text: str, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(redact_text(text) + "\n")
    stream.flush()


def plan_meta(plan: Plan, cwd: Path) -> dict[str, Any]:
    backend = plan.spec.backend
    inputs = {}
    for key, ref in (
        ("dataset", plan.dataset),
        ("evaluator", plan.evaluator),
        ("evaluation_dataset", plan.evaluation_dataset),
    ):
        if ref is not None:
            local = ref.local
            inputs[key] = {
                "name": ref.name,
                "path": str(local.path) if local else None,
                "sha256": local and local.sha256,
                **({"max_rows": local.max_rows} if local and local.max_rows else {}),
            }
    return {
        "job_id": plan.job_id,
        "job_name": plan.job_name,
        "backend": {
            "kind": backend.kind,
            "base_url": backend.base_url,
            "account_id": plan.account_id,
            "profile": backend.profile,
        },
        "inputs": inputs,
        "overrides": plan.overrides,
        "dry_run": plan.spec.dry_run,
        "planned_at": now_iso(),
        "cwd": str(cwd),
        "git": git_state(cwd),
        "versions": package_versions(),
    }


def record_plans(composed: Composed) -> list[tuple[Plan, RunRecord]]:
    """Write each plan's record; a point identical to an earlier one of the same launch is recorded once."""
    assert composed.launch_dir is not None and composed.cwd is not None
    recorded: list[tuple[Plan, RunRecord]] = []
    seen: set[str] = set()
    for plan in composed.plans:
        if plan.job_id in seen:
            continue
        seen.add(plan.job_id)
        record = RunRecord(composed.launch_dir / plan.job_id)
        record.write_plan(plan.config, plan.request_json(), plan_meta(plan, composed.cwd))
        recorded.append((plan, record))
    for point in composed.invalid:
        write_invalid_point(composed.launch_dir, point.index, point.overrides, point.problems)
    return recorded


def _index_ranges(indices: list[int]) -> str:
    """`0-3, 5, 7-8` for [0, 1, 2, 3, 5, 7, 8]."""
    spans: list[list[int]] = []
    for index in sorted(indices):
        if spans and index == spans[-1][1] + 1:
            spans[-1][1] = index
        else:
            spans.append([index, index])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def invalid_report(composed: Composed) -> str:
    """The validation problems, each said once: in a sweep, a problem shared by several points (a missing W&B
    setting, say) is one line naming the points, not a copy per point."""
    if not composed.multirun:
        return "invalid config:\n  " + "\n  ".join(composed.invalid[0].problems)
    points: dict[str, list[int]] = {}
    for point in composed.invalid:
        for problem in point.problems:
            points.setdefault(problem, []).append(point.index)
    total = len(composed.plans) + len(composed.invalid)
    overrides = {point.index: " ".join(point.overrides) or "(no overrides)" for point in composed.invalid}
    lines = [
        f"{len(composed.invalid)} of {total} points are invalid and not submitted "
        f"(each recorded in {composed.launch_dir}/invalid-N/error.json):"
    ]
    for problem, indices in points.items():
        if len(indices) == 1:
            where = f"point {indices[0]} [{overrides[indices[0]]}]"
        elif len(indices) == total:
            where = f"all {total} points"
        else:
            where = f"points {_index_ranges(indices)}"
        lines.append(f"  {where}: {problem}")
    return "\n".join(lines)


def print_dry_run(runs: list[tuple[Plan, RunRecord]], multirun: bool) -> None:
    output = runs[0][0].spec.output
    if output == "json":
        requests = [redact(plan.request) for plan, _ in runs]
        echo(json.dumps(requests if multirun else requests[0], indent=2))
        return
    for plan, record in runs:
        account = None if plan.account_id == UNKNOWN_ACCOUNT else plan.account_id
        if output == "flag":
            echo(render.firectl_command(plan.spec, plan.job_id, account, plan.body))
            continue
        echo(render.summary(plan.spec, plan.job_id, plan.request["url"], plan.body))
        if plan.mcp_server and plan.mcp_server.create_body:
            registration = plan.mcp_server.create_request(plan.spec.backend.base_url, plan.account_id)
            echo(f"mcp create {json.dumps(registration)} (unless it exists)")
        if account is None:
            echo("account    unknown (set backend.account_id); shown as ACCOUNT_ID")
        echo(f"record     {record.path}\n")
    if output == "text":
        echo(f"dry run: {len(runs)} request(s) printed, nothing sent.")


def run(composed: Composed) -> int:
    """Exit status: 0 done, 1 a request failed, 2 a point did not validate."""
    if not composed.plans and not composed.invalid:
        return 0  # --help, --cfg and the like: Hydra printed what was asked
    runs = record_plans(composed)
    if composed.invalid:
        echo(invalid_report(composed), err=True)
    status = 2 if composed.invalid else 0
    dry = [(plan, record) for plan, record in runs if plan.spec.dry_run]
    live = [(plan, record) for plan, record in runs if not plan.spec.dry_run]
    if dry:
        print_dry_run(dry, composed.multirun)
    if live:
        status = max(status, submit_and_follow(live, composed.multirun))
    return status


def submit_and_follow(runs: list[tuple[Plan, RunRecord]], multirun: bool) -> int:
    import httpx

    from rftlab.fireworks.client import ApiError
    from rftlab.fireworks.credentials import CredentialsError
    from rftlab.launch.submit import as_json, describe, submit_all
    from rftlab.runs.connect import Clients
    from rftlab.runs.follow import follow, status_table, wide_console
    from rftlab.server.daemon import LocalServerError

    spec = runs[0][0].spec
    with Clients() as clients:
        try:
            results = submit_all(runs, clients)
        except (CredentialsError, LocalServerError, ApiError, httpx.HTTPError) as err:
            echo(f"submission failed: {err}", err=True)
            return 1
        if spec.output == "json":
            payload = as_json(results)
            echo(json.dumps(payload if multirun else payload[0], indent=2))
        for result in results:
            if result.outcome == "failed":
                echo(describe(result), err=True)
            elif spec.output != "json" and not spec.quiet:
                echo(describe(result))
        status = 1 if any(r.outcome == "failed" for r in results) else 0
        to_follow = [r.record for r in results if r.outcome != "failed" and r.plan.spec.wait]
        if to_follow:
            status = max(status, follow(to_follow, clients, spec.backend.poll_interval_s, quiet=spec.quiet))
            if not spec.quiet:
                wide_console().print(status_table(to_follow))
    return status
