"""`rftlab rollouts` against a real `rftlab serve`: by run folder, by job id through the run records, by --backend."""

from __future__ import annotations

import json

import pytest
from rollout_fixtures import seed_job
from server_harness import LocalServer

from rftlab import cli


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0) as running:
        with running.client() as client:
            seed_job(running, client, "local", "seeded", 3)
        yield running


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
    assert "seeded train step 3 of 3: 8 kept, 6 valid, mean reward 0.333" in out
    assert out.count("best") == 2 and out.count("worst") == 2
    assert "The answer is 33" in out and "What is 13+20?" in out
    assert "error: ValueError: no number in the reply" in out  # each group's worst is its invalid rollout
    assert "/dashboard/fine-tuning/reinforcement/seeded" in out


def test_a_step_and_the_k_worst_by_run_folder(project, capsys):
    assert cli.main(["rollouts", str(project), "--step", "2", "--worst", "3"]) == 0
    out = printed(capsys)
    assert "train step 2 of 3" in out and out.count("worst") == 3 and "best" not in out.split("\n", 1)[1]
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
    assert "eval step 0 of 3: 3 kept" in printed(capsys)


def test_unknown_jobs_and_steps_say_what_to_pass(project, server, capsys):
    assert cli.main(["rollouts", "nobody"]) == 1
    assert "no run of job nobody under ./outputs" in capsys.readouterr().err
    assert cli.main(["rollouts", "seeded", "--step", "9"]) == 1
    assert "kept no train rollouts at step 9; steps kept: 1, 2, 3" in capsys.readouterr().err
    assert cli.main(["rollouts", "nobody", "--backend", server.base_url]) == 1
    assert "nobody" in capsys.readouterr().err
