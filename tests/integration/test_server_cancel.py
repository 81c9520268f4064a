"""Cancel and delete take effect mid-chunk: a job whose evaluator takes half a minute per call is ended, with its
worker and every process the worker started (the sandboxed evaluator pool included), within 10 seconds."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from server_harness import (
    LocalServer,
    add_training_inputs,
    create_evaluator,
    create_job,
    job_state,
    small_job,
    wait_for,
    worker_pids,
)

pytestmark = pytest.mark.slow

A = "/v1/accounts/local/reinforcementFineTuningJobs"
SLOW_EVALUATOR = "import time\n\n\ndef evaluate(messages, ground_truth=None, **kwargs):\n    time.sleep(30)\n    return 1.0\n"
DEADLINE_S = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("cancel"), max_running_jobs=1) as running:
        with running.client() as client:
            add_training_inputs(client)
            create_evaluator(client, "local", "slow", code=SLOW_EVALUATOR)
        yield running


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every live process."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(root: int) -> dict[int, str]:
    """The live processes under `root` (root included), each with its start time (pids are reused)."""
    table = process_table()
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in table:
            found[pid] = table[pid][1]
            frontier += [child for child, (parent, _) in table.items() if parent == pid]
    return found


def still_alive(processes: dict[int, str]) -> list[int]:
    table = process_table()
    return [pid for pid, started in processes.items() if pid in table and table[pid][1] == started]


def scoring_job(server: LocalServer, job_id: str) -> dict[int, str]:
    """Start a job with the slow evaluator; once its evaluator pool is busy, the worker's process tree."""
    with server.client() as client:
        create_job(
            client,
            "local",
            job_id,
            small_job("accounts/local/datasets/rows", "accounts/local/evaluators/slow"),
        )
        wait_for(lambda: job_state(client, "local", job_id)["state"] == "JOB_STATE_RUNNING", "the job to run")
    (worker,) = wait_for(lambda: worker_pids(server.state_dir), "the job's worker")
    return wait_for(lambda: evaluating(worker), "the worker's evaluator processes to score", timeout_s=240)


def evaluating(worker: int) -> dict[int, str] | None:
    """The worker's process tree once an evaluator worker runs in it."""
    tree = descendants(worker)
    for pid in tree:
        try:
            if b"evaluator_worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return tree
        except OSError:
            continue
    return None


@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_a_job_ends_mid_chunk_with_all_its_processes(server, how):
    job_id = f"stopped-by-{how}"
    tree = scoring_job(server, job_id)
    with server.client() as client:
        started = time.monotonic()
        if how == "cancel":
            assert client.post(f"{A}/{job_id}:cancel").status_code == 200
            wait_for(
                lambda: job_state(client, "local", job_id)["state"] == "JOB_STATE_CANCELLED",
                "the job to be cancelled",
                timeout_s=DEADLINE_S,
                every_s=0.1,
            )
        else:
            assert client.delete(f"{A}/{job_id}").status_code == 200
        wait_for(
            lambda: not still_alive(tree),
            "every process of the job to end",
            timeout_s=DEADLINE_S,
            every_s=0.1,
        )
        took = time.monotonic() - started
        if how == "cancel":
            status = job_state(client, "local", job_id)["status"]["message"]
            assert "last checkpoint is kept" in status
    assert took < DEADLINE_S
    assert not worker_pids(server.state_dir)
    print(f"{how}: job and {len(tree)} processes ended in {took:.1f} s")
