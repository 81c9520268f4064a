"""The rollouts route of a real `rftlab serve` (paging, filters, the kept steps, who may read them), and
`rftlab rollouts` reading it: by run folder, by job id through the run records, by --backend."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from rollout_fixtures import seed_job
from server_harness import free_port, wait_for

from rftlab import cli
from rftlab.server.rollouts import RolloutPolicy, load_policy
from rftlab.server.store import Store, sqlite_url

JOBS = "/v1/accounts/local/reinforcementFineTuningJobs"
STEPS = 5


@pytest.fixture(scope="module")
def client(server):
    with server.client() as c:
        seed_job(server, c, "local", "seeded", STEPS)
        yield c


def all_pages(client, path, **params) -> list[dict]:
    items, token = [], ""
    while True:
        answer = client.get(path, params={**params, "pageToken": token})
        assert answer.status_code == 200, answer.text
        items += answer.json()["rollouts"]
        token = answer.json()["nextPageToken"]
        if not token:
            return items


def test_a_step_lists_its_groups_in_order_with_every_field_the_engine_reported(client):
    answer = client.get(f"{JOBS}/seeded/rollouts", params={"step": 3}).json()
    rollouts = answer["rollouts"]
    assert answer["nextPageToken"] == ""
    assert [(r["group"], r["candidate"]) for r in rollouts] == [(g, c) for g in range(2) for c in range(4)]
    first = rollouts[0]
    assert first["kind"] == "train" and first["step"] == 3
    assert first["messages"][0] == {"role": "user", "content": "What is 13+20?"}
    assert first["completion_text"] == "The answer is 33" and first["reward"] == 1.0
    assert first["trained_spans"] == [[14, 16]] and first["finish_reason"] == "stop"
    assert (
        rollouts[3]["valid"] is False
        and rollouts[3]["reward"] is None
        and "ValueError" in rollouts[3]["error"]
    )


def test_pages_cover_every_kept_rollout_once(client):
    whole = all_pages(client, f"{JOBS}/seeded/rollouts", pageSize=3)
    assert len(whole) == STEPS * 8
    assert len({(r["step"], r["group"], r["candidate"]) for r in whole}) == STEPS * 8
    assert [r["step"] for r in whole] == sorted(r["step"] for r in whole)


def test_filters_by_reward_range_validity_and_kind(client):
    right = all_pages(client, f"{JOBS}/seeded/rollouts", minReward=0.5)
    assert len(right) == STEPS * 2 and all(r["reward"] == 1.0 for r in right)
    wrong = all_pages(client, f"{JOBS}/seeded/rollouts", maxReward=0.5, step=2)
    assert {(r["candidate"], r["reward"]) for r in wrong} == {(1, 0.0), (2, 0.0)}
    invalid = all_pages(client, f"{JOBS}/seeded/rollouts", valid="false")
    assert len(invalid) == STEPS * 2 and not any(r["valid"] for r in invalid)
    best_first = client.get(f"{JOBS}/seeded/rollouts", params={"step": 1, "orderBy": "reward desc"}).json()
    assert best_first["rollouts"][0]["reward"] == 1.0
    evals = all_pages(client, f"{JOBS}/seeded/rollouts", kind="eval")
    assert sorted({r["step"] for r in evals}) == [0, STEPS] and len(evals) == 6


def test_the_kept_steps_say_how_many_and_their_mean_reward(client):
    steps = client.get(f"{JOBS}/seeded/rolloutSteps").json()["steps"]
    assert [(s["kind"], s["step"]) for s in steps] == [("eval", 0), ("eval", STEPS)] + [
        ("train", n) for n in range(1, STEPS + 1)
    ]
    train_1 = steps[2]
    assert train_1["count"] == 8 and train_1["validCount"] == 6
    assert train_1["rewardMean"] == pytest.approx(2 / 6)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "test"}, "kind: must be one of train, eval"),
        ({"valid": "maybe"}, "valid: use true or false"),
        ({"orderBy": "size"}, "orderBy: cannot order by 'size'"),
        ({"pageToken": "nope"}, "pageToken: not a token this server issued"),
    ],
)
def test_a_bad_query_is_a_400_that_names_the_parameter(client, params, message):
    answer = client.get(f"{JOBS}/seeded/rollouts", params=params)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]


def test_no_key_is_401_and_another_accounts_job_is_404(server, client):
    anonymous = client.get(f"{JOBS}/seeded/rollouts", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    other_key = server.add_account("other")
    with server.client(other_key) as other:
        assert other.get(f"{JOBS}/seeded/rollouts").status_code == 404
        assert other.get("/v1/accounts/other/reinforcementFineTuningJobs/seeded/rollouts").status_code == 404
        assert (
            other.get("/v1/accounts/other/reinforcementFineTuningJobs/seeded/rolloutSteps").status_code == 404
        )


def test_deleting_the_job_deletes_its_rollouts(server, client):
    seed_job(server, client, "local", "short-lived", 2)
    assert client.get(f"{JOBS}/short-lived/rollouts").json()["rollouts"]
    assert client.delete(f"{JOBS}/short-lived").status_code == 200
    seed_job(server, client, "local", "short-lived", 1)  # the same id again starts empty of old steps
    steps = client.get(f"{JOBS}/short-lived/rolloutSteps").json()["steps"]
    assert [(s["kind"], s["step"]) for s in steps] == [("eval", 0), ("eval", 1), ("train", 1)]


@pytest.fixture
def project(server, tmp_path, monkeypatch):
    """A project folder with a run record of job `seeded`; HOME is the server's (its key's profile)."""
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "2026-01-01" / "00-00-00" / "seeded"
    run.mkdir(parents=True)
    (run / "request.json").write_text("{}")
    backend = {"kind": "local", "base_url": server.base_url, "account_id": "local", "profile": "rftlab-local"}
    (run / "meta.json").write_text(json.dumps({"backend": backend}))
    return run


def printed(capsys) -> str:
    return capsys.readouterr().out


def test_the_latest_step_shows_each_groups_best_and_worst(project, capsys):
    assert cli.main(["rollouts", "seeded"]) == 0
    out = printed(capsys)
    assert "seeded train step 5 of 5: 8 kept, 6 valid, mean reward 0.333" in out
    assert out.count("best") == 2 and out.count("worst") == 2
    assert "The answer is 35" in out and "What is 15+20?" in out
    assert "error: ValueError: no number in the reply" in out  # each group's worst is its invalid rollout
    assert "/dashboard/fine-tuning/reinforcement/seeded" in out


def test_a_step_and_the_k_worst_by_run_folder(project, capsys):
    assert cli.main(["rollouts", str(project), "--step", "2", "--worst", "3"]) == 0
    out = printed(capsys)
    assert "train step 2 of 5" in out and out.count("worst") == 3 and "best" not in out.split("\n", 1)[1]
    assert "The answer is 32" not in out  # the right answers are the best, not among the 3 worst


def test_eval_passes_and_an_explicit_backend(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "rollouts",
                "accounts/local/reinforcementFineTuningJobs/seeded",
                "--kind",
                "eval",
                "--step",
                "0",
                "--backend",
                server.base_url,
                "--best",
                "1",
            ]
        )
        == 0
    )
    assert "eval step 0 of 5: 3 kept" in printed(capsys)


def test_unknown_jobs_and_steps_say_what_to_pass(project, server, capsys):
    assert cli.main(["rollouts", "nobody"]) == 1
    assert "no run of job nobody under ./outputs" in capsys.readouterr().err
    assert cli.main(["rollouts", "seeded", "--step", "9"]) == 1
    assert "kept no train rollouts at step 9; steps kept: 1, 2, 3, 4, 5" in capsys.readouterr().err
    assert cli.main(["rollouts", "nobody", "--backend", server.base_url]) == 1
    assert "nobody" in capsys.readouterr().err


def test_a_bad_keep_rollouts_flag_stops_serve_before_it_starts(tmp_path):
    serve = [sys.executable, "-m", "rftlab.server.serve", "--state-dir", str(tmp_path / "state")]
    refused = subprocess.run([*serve, "--keep-rollouts", "some"], capture_output=True, text=True)
    assert refused.returncode == 2 and "use 'all' or 'sample:N'" in refused.stderr
    assert not (tmp_path / "state" / "server.pid").exists()


@pytest.mark.slow
def test_the_serve_flags_set_the_policy_the_workers_read(tmp_path):
    state = tmp_path / "state"
    serve = [sys.executable, "-m", "rftlab.server.serve", "--state-dir", str(state)]
    port = free_port()
    server = subprocess.Popen(
        [*serve, "--port", str(port), "--keep-rollouts", "all", "--rollouts-max-mb", "5"]
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), "the server", timeout_s=60)
        store = Store(sqlite_url(str(state / "rftlab.db")))
        with store.reading() as session:
            assert load_policy(session) == RolloutPolicy(per_step=None, max_bytes=5 * 1024 * 1024)
        store.dispose()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
