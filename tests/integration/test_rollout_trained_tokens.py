"""What each rollout trained on, from the trained mask to the rollout route and `rftlab rollouts`: multi-turn
rollouts the tiny calculator model really samples against a real MCP server mark every assistant turn's tokens and
none of a tool result's or the prompt's."""

from __future__ import annotations

import itertools
import re

import pytest
from rollout_fixtures import (
    TOOL_CANDIDATES,
    TOOL_ROWS,
    records,
    sampled_tool_rollouts,
    seed_job,
    seed_rollouts,
)
from server_harness import LocalServer

from rftlab import cli

JOBS = "/v1/accounts/local/reinforcementFineTuningJobs"

pytestmark = pytest.mark.slow  # a real model samples (about 15 s) and a server starts


@pytest.fixture(scope="module")
def sampled():
    rollouts = sampled_tool_rollouts()
    assert len(rollouts) == TOOL_ROWS * TOOL_CANDIDATES
    assert any(rollout.turns >= 2 for rollout in rollouts), (
        "the model called no tool: nothing multi-turn to show"
    )
    return rollouts


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(
        tmp_path_factory.mktemp("server"), max_running_jobs=0, extra_args=["--keep-rollouts", "all"]
    ) as running:
        yield running


@pytest.fixture(scope="module")
def served(server, sampled):
    with server.client() as client:
        seed_job(server, client, "local", "tools", 1)
        seed_rollouts(server, "local", "tools", 2, records(sampled))
        answer = client.get(f"{JOBS}/tools/rollouts", params={"step": 2, "pageSize": 200})
    assert answer.status_code == 200, answer.text
    return answer.json()["rollouts"]


def mask_runs(mask: list[bool]) -> list[int]:
    """The lengths of the runs of trained tokens, in order."""
    return [len(list(run)) for trained, run in itertools.groupby(mask) if trained]


def check_marks(record: dict, row_messages: int) -> None:
    """The row's messages are not in the completion (None), each assistant turn has trained tokens, no tool result
    has any."""
    counts, messages = record["trained_tokens"], record["messages"]
    assert len(counts) == len(messages)
    assert counts[:row_messages] == [None] * row_messages
    for message, count in zip(messages[row_messages:], counts[row_messages:], strict=True):
        if message["role"] == "assistant":
            assert count > 0, message
        else:
            assert message["role"] == "tool" and count == 0, (message, count)


def test_each_turn_counts_its_run_of_the_trained_mask(sampled):
    for rollout in sampled:
        record = rollout.record(group=0)
        check_marks(record, row_messages=1)
        turns = [
            n
            for m, n in zip(rollout.messages, record["trained_tokens"], strict=True)
            if m["role"] == "assistant"
        ]
        assert len(turns) == rollout.turns
        assert turns == mask_runs(rollout.trained_mask), "turn i is the i-th run of trained tokens"


def test_the_route_serves_the_marks_of_every_assistant_turn_and_no_tool_result(served, sampled):
    assert len(served) == len(sampled)
    by_place = {(r["group"], r["candidate"]): r for r in served}
    multi_turn = 0
    for i, rollout in enumerate(sampled):
        record = by_place[(i // TOOL_CANDIDATES, rollout.candidate)]
        check_marks(record, row_messages=1)
        assert sum(n or 0 for n in record["trained_tokens"]) == sum(rollout.trained_mask)
        if record["turns"] >= 2:
            multi_turn += 1
            roles = [m["role"] for m in record["messages"]]
            assert roles[:3] == ["user", "assistant", "tool"] and roles[-1] == "assistant"
    assert multi_turn > 0


def test_rftlab_rollouts_prints_each_turn_of_a_multi_turn_rollout(
    server, served, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["rollouts", "tools", "--backend", server.base_url, "--step", "2", "--best", "32"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ assistant: .*\n(.*\n)*?│ tool \S+: ", out), out[:3000]
