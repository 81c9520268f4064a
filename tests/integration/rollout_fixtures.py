"""A job with per-step metrics and rollouts in a real server's store, written the way the job worker writes them
(`StoreReporter`'s store calls), for the rollout route, dashboard and browser tests; and multi-turn rollouts the
tiny calculator model really sampled against a real MCP server, as the engine records them."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import torch
from mcp_fixtures import mcp_server
from server_harness import (
    LocalServer,
    arithmetic_jsonl,
    create_evaluator,
    create_job,
    small_job,
    upload_dataset,
)
from sqlalchemy import select

from rftlab.engine.evaluator import Score
from rftlab.engine.models import Placement, load_base_model
from rftlab.engine.rollout import HFSampler, Rollout
from rftlab.engine.settings import SamplingParams, ToolSettings
from rftlab.engine.tool_rollout import ToolRollouts
from rftlab.paths import ASSETS_DIR
from rftlab.server.rollouts import store_rollouts
from rftlab.server.store import Job, JobMetric, Store, sqlite_url

TOOL_ROWS, TOOL_CANDIDATES = 4, 4


def rollout(step: int, group: int, candidate: int, reward: float | None) -> dict[str, Any]:
    """One rollout as the engine reports it: row `group` of step `step`, a two-digit sum."""
    a, b = 10 + step, 20 + group
    answer = str(a + b + (0 if reward else candidate + 1))
    completion = f"The answer is {answer}" if reward is not None else "<garbled>"
    return {
        "row_index": step * 10 + group,
        "group": group,
        "candidate": candidate,
        "messages": [
            {"role": "user", "content": f"What is {a}+{b}?"},
            {"role": "assistant", "content": completion},
        ],
        "completion_text": completion,
        "reward": reward,
        "valid": reward is not None,
        "reason": "exact match" if reward else ("no number" if reward is None else f"expected {a + b}"),
        "error": "" if reward is not None else "ValueError: no number in the reply",
        "metrics": {"exact": reward or 0.0},
        "finish_reason": "stop",
        "prompt_tokens": 9,
        "completion_tokens": len(completion) // 3,
        "advantage": None if reward is None else (reward - 0.5) * 2,
        "trained_spans": [[len("The answer is "), len(completion)]] if reward is not None else [],
    }


def step_rollouts(step: int, groups: int = 2, candidates: int = 4) -> list[dict[str, Any]]:
    """Each group: candidate 0 right (reward 1), the last one invalid, the others wrong (reward 0)."""
    return [
        rollout(
            step, group, candidate, 1.0 if candidate == 0 else None if candidate == candidates - 1 else 0.0
        )
        for group in range(groups)
        for candidate in range(candidates)
    ]


def step_metrics(step: int) -> dict[str, float]:
    return {
        "step": step,
        "epoch": 0,
        "reward_mean": 0.2 + 0.05 * step,
        "reward_std": 0.3,
        "loss": 0.1 / step,
        "kl": 0.001 * math.sqrt(step),
        "step_seconds": 1.5,
        "gen_seconds": 1.0,
        "update_seconds": 0.4,
    }


def seed_job(server: LocalServer, client: httpx.Client, account: str, job_id: str, steps: int) -> None:
    """A queued job of `account` (the server must run no jobs: max_running_jobs=0) with `steps` steps of metrics,
    train rollouts at every step and eval rollouts before and after training."""
    if client.get(f"/v1/accounts/{account}/datasets/rows").status_code == 404:
        assert upload_dataset(client, account, "rows", arithmetic_jsonl(8)).status_code == 200
        create_evaluator(client, account, "exact")
    dataset, evaluator = f"accounts/{account}/datasets/rows", f"accounts/{account}/evaluators/exact"
    create_job(client, account, job_id, small_job(dataset, evaluator))
    store = Store(sqlite_url(str(server.state_dir / "rftlab.db")))
    try:
        with store.session() as session:
            seq = session.scalar(select(Job.seq).where(Job.account_id == account, Job.job_id == job_id))
            for step in range(1, steps + 1):
                session.add(JobMetric(job_seq=seq, step=step, metrics=step_metrics(step)))
        for step in range(1, steps + 1):
            store_rollouts(store, seq, "train", step, step_rollouts(step))
        for step in (0, steps):
            store_rollouts(store, seq, "eval", step, step_rollouts(step, groups=3, candidates=1))
    finally:
        store.dispose()


def sampled_tool_rollouts() -> list[Rollout]:
    """TOOL_ROWS x TOOL_CANDIDATES rollouts the tiny calculator model samples (seeded) against the
    MCP test server's multiply tool, up to three turns each, scored by exact match."""
    lines = (ASSETS_DIR / "mcp_calculator" / "train.jsonl").read_text().splitlines()[:TOOL_ROWS]
    rows = [json.loads(line) for line in lines]
    torch.manual_seed(0)
    model, tokenizer = load_base_model("tiny-calculator", Placement(torch.device("cpu"), torch.float32))
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_output_tokens=40)
    with (
        mcp_server(only_tool="multiply") as mcp,
        ToolRollouts(
            tokenizer, ToolSettings(mcp.url, max_turns=3), model.config.max_position_embeddings
        ) as tools,
    ):
        rollouts = tools.run(HFSampler(model, tokenizer), rows, TOOL_CANDIDATES, params)
    for rollout in rollouts:
        right = rows[rollout.row_index]["ground_truth"] in rollout.text
        rollout.score = Score(float(right), "exact match" if right else "no exact match")
    return rollouts


def records(rollouts: list[Rollout]) -> list[dict[str, Any]]:
    """What the engine reports of a round's rollouts (groups of TOOL_CANDIDATES)."""
    return [rollout.record(group=i // TOOL_CANDIDATES) for i, rollout in enumerate(rollouts)]


def seed_rollouts(
    server: LocalServer, account: str, job_id: str, step: int, records: list[dict[str, Any]]
) -> None:
    """`records` kept as the train rollouts of `step` of an existing job."""
    store = Store(sqlite_url(str(server.state_dir / "rftlab.db")))
    try:
        with store.reading() as session:
            seq = session.scalar(select(Job.seq).where(Job.account_id == account, Job.job_id == job_id))
        store_rollouts(store, seq, "train", step, records)
    finally:
        store.dispose()
