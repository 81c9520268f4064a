"""A job whose replies are cut off at maxOutputTokens, its eval reward measured by the greedy pass only, launched
with `rftlab launch ... wait=true` against a real local backend: the running job's status warns (how many replies,
and the fix), the launcher prints that warning once, and the final metrics hold the greedy eval reward only."""

from __future__ import annotations

import re

import pytest
from server_harness import LocalServer, project_folder

from rftlab import cli
from rftlab.fireworks.contract import RUNNING, SUCCESSFUL_STATES
from rftlab.runs.follow import final_metrics
from rftlab.runs.records import find_runs

pytestmark = pytest.mark.slow

FIX = "raise sampling.max_output_tokens (inferenceParameters.maxOutputTokens)"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("live-warning-server"), max_running_jobs=1) as running:
        yield running


def test_cut_off_replies_warn_while_the_job_runs_and_greedy_alone_measures_the_eval(
    server, tmp_path, monkeypatch, capsys
):
    with project_folder(server, tmp_path, monkeypatch, rows=40) as folder:
        code = cli.main(
            [
                "launch",
                f"backend.base_url={server.base_url}",
                "dataset.path=rows.jsonl",
                "training.epochs=1",
                "sampling.response_candidates_count=4",
                "sampling.max_output_tokens=1",  # no answer ends by itself within one token
                "eval_passes=[greedy]",
                "backend.poll_interval_s=0.1",
                "wait=true",
            ]
        )
        err = capsys.readouterr().err
        (run,) = find_runs(folder / "outputs")
    job = run.read_json("job.json")
    assert code == 0 and job["state"] in SUCCESSFUL_STATES, job["status"]

    running = [entry["message"] for entry in run.status_history() if entry["state"] == RUNNING]
    warnings = [message for message in running if message.startswith("warning: ")]
    assert warnings, running
    # a round of 8 rows x 4 candidates, one token each (a reply ends by itself only if that token is EOS)
    first = re.fullmatch(
        rf"warning: (\d+) of (\d+) replies in the round ending at step \d+ hit maxOutputTokens \(1\) and were "
        rf"cut off; {re.escape(FIX)}",
        warnings[0],
    )
    assert first and int(first[1]) * 2 > int(first[2]), warnings[0]

    printed = [line for line in err.splitlines() if "hit maxOutputTokens (1)" in line]
    assert len(printed) == 1 and printed[0].startswith(f"{run.job_id}: warning: "), err

    assert "of the replies hit maxOutputTokens and were cut off" in job["status"]["message"]
    final = final_metrics(job)
    assert final["truncated_replies_frac"] > 0.5
    assert {"eval_reward_greedy_before", "eval_reward_greedy_after"} <= set(final)
    assert not {"eval_reward_before", "eval_reward_after"} & set(final)
    assert job["evalPasses"] == ["greedy"]
