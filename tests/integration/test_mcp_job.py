"""A short real job on `rftlab serve` naming a user's MCP server registered through the REST API: it completes,
the server sees one MCP session per rollout (plus the probe at create), the model's tool calls reach it, and the
job's metrics and rollouts carry the tool use."""

from __future__ import annotations

import json

import pytest
from mcp_fixtures import mcp_server
from server_harness import TERMINAL_STATES, LocalServer, create_evaluator, upload_dataset, wait_for

from rftlab.paths import ASSETS_DIR

A = "/v1/accounts/local"
ROWS, K = 8, 4


@pytest.mark.slow
def test_a_job_naming_a_registered_mcp_server_runs_tool_rollouts_against_it(tmp_path):
    rows = (ASSETS_DIR / "mcp_calculator" / "train.jsonl").read_bytes().splitlines(keepends=True)[:ROWS]
    # the tiny calculator model knows one tool; a prompt listing others would be new to it
    with (
        mcp_server(only_tool="multiply") as mcp,
        LocalServer.under(tmp_path) as server,
        server.client() as client,
    ):
        assert upload_dataset(client, "local", "calc", b"".join(rows)).status_code == 200
        create_evaluator(client, "local", "exact")
        created = client.post(
            f"{A}/mcpServers", params={"mcpServerId": "mine"}, json={"endpointUrl": mcp.url}
        )
        assert created.json()["state"] == "ACTIVE"
        job = {
            "dataset": "calc",
            "evaluator": "exact",
            "evalAutoCarveout": False,
            "mcpServer": "accounts/local/mcpServers/mine",
            "chunkSize": ROWS,
            "trainingConfig": {"baseModel": "tiny-calculator", "epochs": 1, "loraRank": 4},
            "inferenceParameters": {
                "responseCandidatesCount": K,
                "maxOutputTokens": 40,
                "extraBody": json.dumps({"max_turns": 3}),
            },
        }
        answer = client.post(
            f"{A}/reinforcementFineTuningJobs", params={"reinforcementFineTuningJobId": "tools"}, json=job
        )
        assert answer.status_code == 200, answer.text
        done = wait_for(
            lambda: (
                (j := client.get(f"{A}/reinforcementFineTuningJobs/tools").json())["state"] in TERMINAL_STATES
                and j
            ),
            "the job to end",
            timeout_s=900,
        )
        rollouts = client.get(f"{A}/reinforcementFineTuningJobs/tools/rollouts").json()["rollouts"]
        assert done["state"] == "JOB_STATE_COMPLETED", (
            done["status"],
            [(r["reward"], r["messages"][1:]) for r in rollouts[:3]],
        )

        stats = mcp.stats()
        assert stats["initialize"] == 1 + ROWS * K, "the probe, then one session per rollout"
        steps = client.get(f"{A}/reinforcementFineTuningJobs/tools/metrics").json()["metrics"]
        assert all("tool_calls_per_rollout" in step and "tool_errors" in step for step in steps), steps
        assert 0 < len(rollouts) <= ROWS * K  # the kept sample of the step's rollouts
        assert all(r["turns"] >= 1 and "tool_calls" in r for r in rollouts)
        assert sum(r["tool_calls"] for r in rollouts) > 0 and stats["calls"] > 0
        for (
            rollout
        ) in rollouts:  # what it trained on: each of the model's turns, no tool result, not the prompt
            marks = list(zip(rollout["messages"], rollout["trained_tokens"], strict=True))
            assert [(m["role"], n) for m, n in marks[:1]] == [("user", None)]
            assert all(n > 0 if m["role"] == "assistant" else n == 0 for m, n in marks[1:]), marks
