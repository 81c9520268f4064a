"""`rftlab rollouts JOB [--step N] [--worst K]`: a job's kept rollouts in the terminal.

JOB is a run folder (outputs/<date>/<time>/<job id>), or a job id (or `accounts/A/reinforcementFineTuningJobs/J`)
found among the run records under ./outputs, or reached through `--backend URL`. Without --best/--worst it shows
the best and the worst of each group of the step, as the dashboard does.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rftlab.fireworks.client import ApiError, FireworksClient
from rftlab.fireworks.redact import redact_text
from rftlab.runs.connect import Backend, Clients
from rftlab.runs.dashboard import job_dashboard_url
from rftlab.runs.follow import wide_console
from rftlab.runs.records import RunRecord, find_runs

OUTPUTS = Path("outputs")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
JOB_NAME = re.compile(r"accounts/([^/]+)/reinforcementFineTuningJobs/([^/]+)")


def _fail(message: str) -> int:
    sys.stderr.write(redact_text(f"rftlab rollouts: {message}") + "\n")
    return 1


def resolve(
    target: str, backend_url: str | None, account: str | None, profile: str | None
) -> tuple[Backend, str]:
    """(backend, job id) for a run folder, a job id with a run record under ./outputs, or `--backend`."""
    if (Path(target) / "request.json").is_file():
        record = RunRecord(Path(target))
        return Backend.of_record(record), record.job_id
    named = JOB_NAME.fullmatch(target)
    job_id = named.group(2) if named else target
    account = account or (named.group(1) if named else None)
    if backend_url:
        kind = "local" if urlparse(backend_url).hostname in LOCAL_HOSTS else "fireworks"
        default_profile = "rftlab-local" if kind == "local" else None
        return Backend(kind, backend_url, account or "local", profile or default_profile), job_id
    records = [run for run in find_runs(OUTPUTS) if run.job_id == job_id] if OUTPUTS.is_dir() else []
    if not records:
        raise LookupError(
            f"{target}: no run folder, and no run of job {job_id} under ./outputs; pass a run folder, or the "
            "backend: --backend http://127.0.0.1:8317"
        )
    return Backend.of_record(records[-1]), job_id


def _pages(client: FireworksClient, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {**params, "pageSize": 200}
    while True:
        page = client.request("GET", path, params=params)
        items += page.get(key, [])
        if not page.get("nextPageToken"):
            return items
        params["pageToken"] = page["nextPageToken"]


def _rank(rollout: dict[str, Any]) -> float:
    reward = rollout.get("reward")
    return reward if rollout.get("valid") and isinstance(reward, (int, float)) else float("-inf")


def chosen(rollouts: list[dict[str, Any]], best: int | None, worst: int | None) -> list[tuple[str, dict]]:
    """(label, rollout) pairs: the K best and/or worst of the step, or each group's best and worst."""
    ranked = sorted(rollouts, key=_rank, reverse=True)
    if best or worst:
        picks = [("best", r) for r in ranked[: best or 0]]
        return picks + [("worst", r) for r in list(reversed(ranked))[: worst or 0]]
    picks = []
    for group in sorted({r.get("group", 0) for r in rollouts}):
        members = [r for r in ranked if r.get("group", 0) == group]
        picks.append(("best", members[0]))
        if len(members) > 1:
            picks.append(("worst", members[-1]))
    return picks


def _prompt(rollout: dict[str, Any]) -> str:
    users = [m for m in rollout.get("messages") or [] if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    return content if isinstance(content, str) else str(content)


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    text = content if isinstance(content, str) else "" if content is None else str(content)
    calls = [
        f"{call['function']['name']}({call['function']['arguments']})"
        for call in message.get("tool_calls") or []
    ]
    return "\n".join([text, *calls] if text else calls)


def _completion(rollout: dict[str, Any]) -> Text:
    """What the rollout added to its row, the messages it trained on underlined: every turn of a multi-turn
    rollout (`trained_tokens` counts per message), or the final reply's `trained_spans` in rollouts kept before."""
    counts = rollout.get("trained_tokens")
    if counts is None:
        text = Text(rollout.get("completion_text") or "")
        for start, end in rollout.get("trained_spans") or []:
            text.stylize("underline", start, end)
        return text
    messages = rollout.get("messages") or []
    first = next((i for i, n in enumerate(counts) if n is not None), len(messages))  # after the row's own
    own = list(zip(messages[first:], counts[first:], strict=False))
    if len(own) == 1:
        return Text(_message_text(own[0][0]), style="underline" if own[0][1] else "")
    text = Text()
    for message, trained in own:
        role = message.get("role", "?") + (f" {message['name']}" if message.get("name") else "")
        text.append(f"{role}: ", style="dim")
        text.append(_message_text(message), style="underline" if trained else "")
        text.append("\n")
    text.rstrip()
    return text


def render(label: str, rollout: dict[str, Any]) -> Panel:
    reward = rollout.get("reward")
    facts = Table.grid(padding=(0, 2))
    facts.add_row(
        f"group {rollout.get('group')}",
        f"row {rollout.get('row_index')}",
        f"candidate {rollout.get('candidate')}",
        "reward " + ("invalid" if reward is None else f"{reward:.3f}"),
        f"finish {rollout.get('finish_reason')}",
        f"tokens {rollout.get('prompt_tokens')}+{rollout.get('completion_tokens')}",
    )
    parts: list[Any] = [facts, Text(f"prompt: {_prompt(rollout)}", style="dim"), _completion(rollout)]
    tool_turns = [m for m in rollout.get("messages") or [] if m.get("role") == "tool" or m.get("tool_calls")]
    if tool_turns:
        parts.append(Text(f"{len(tool_turns)} tool call/result message(s) in the conversation", style="dim"))
    if rollout.get("reason"):
        parts.append(Text(f"evaluator: {rollout['reason']}", style="italic"))
    if rollout.get("error"):
        parts.append(Text(f"error: {rollout['error']}", style="red"))
    style = "green" if label == "best" else "red"
    return Panel(Group(*parts), title=f"[{style}]{label}[/]", title_align="left", border_style=style)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rftlab rollouts",
        description="Print a job's kept rollouts: by default each group's best and worst of the latest step.",
    )
    parser.add_argument("job", help="a run folder, or a job id (with a run under ./outputs, or --backend)")
    parser.add_argument("--step", type=int, help="the step (default: the latest with rollouts)")
    parser.add_argument(
        "--kind", choices=["train", "eval"], default="train", help="training steps or eval passes"
    )
    parser.add_argument("--worst", type=int, metavar="K", help="the K lowest-reward rollouts of the step")
    parser.add_argument("--best", type=int, metavar="K", help="the K highest-reward rollouts of the step")
    parser.add_argument("--backend", metavar="URL", help="the backend's base URL, e.g. http://127.0.0.1:8317")
    parser.add_argument("--account", help="the job's account (default: the run's, or local)")
    parser.add_argument("--profile", help="the auth.ini profile holding the key (default: the run's)")
    args = parser.parse_args(argv)
    try:
        backend, job_id = resolve(args.job, args.backend, args.account, args.profile)
    except (LookupError, ValueError) as error:
        return _fail(str(error))
    job_path = f"/v1/accounts/{backend.account_id}/reinforcementFineTuningJobs/{job_id}"
    console = wide_console()
    try:
        with Clients() as clients:
            client = clients.get(backend)
            steps = [
                s
                for s in client.request("GET", f"{job_path}/rolloutSteps")["steps"]
                if s["kind"] == args.kind
            ]
            if not steps:
                console.print(f"{job_id}: no {args.kind} rollouts kept yet")
                return 0
            step = (
                steps[-1] if args.step is None else next((s for s in steps if s["step"] == args.step), None)
            )
            if step is None:
                kept = ", ".join(str(s["step"]) for s in steps)
                return _fail(f"{job_id} kept no {args.kind} rollouts at step {args.step}; steps kept: {kept}")
            rollouts = _pages(
                client, f"{job_path}/rollouts", "rollouts", {"kind": args.kind, "step": step["step"]}
            )
    except ApiError as error:
        return _fail(f"{job_id}: {error.message}")
    mean = step["rewardMean"]
    console.print(
        f"[bold]{job_id}[/] {args.kind} step {step['step']} of {steps[-1]['step']}: {step['count']} kept, "
        f"{step['validCount']} valid, mean reward {'–' if mean is None else f'{mean:.3f}'}"
    )
    for label, rollout in chosen(rollouts, args.best, args.worst):
        console.print(render(label, rollout))
    console.print(f"dashboard: {job_dashboard_url(backend.kind, backend.base_url, job_id)}", style="dim")
    return 0
