"""`source_job=JOB` copies an existing job's settings from the backend, keys on the command line win; and the
new job keys are checked against the backend's bounds before anything is contacted."""

from __future__ import annotations

import json
import socket

import pytest
from server_harness import LocalServer, add_training_inputs, create_job, small_job

from rftlab import cli


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0) as running:
        with running.client() as client:
            add_training_inputs(client)
            create_job(
                client,
                "local",
                "earlier",
                small_job(
                    "accounts/local/datasets/rows",
                    "accounts/local/evaluators/exact",
                    lossConfig={"method": "DAPO"},
                    inferenceParameters={"extraBody": '{"stop":["\\n"]}'},
                    maxConcurrentRollouts=16,
                    evalPasses=["greedy"],
                ),
            )
        yield running


def test_a_source_job_supplies_every_setting_the_command_line_does_not(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.chdir(tmp_path)
    args = [
        "launch",
        f"backend.base_url={server.base_url}",
        "source_job=earlier",
        "training.epochs=2",
        "dry_run=true",
        "output=json",
    ]
    assert cli.main(args) == 0
    body = json.loads(capsys.readouterr().out)["body"]
    assert body["dataset"] == "accounts/local/datasets/rows"
    assert body["evaluator"] == "accounts/local/evaluators/exact"
    assert body["trainingConfig"]["epochs"] == 2  # the command line wins
    assert body["trainingConfig"]["learningRate"] == 0.002  # from the job
    assert body["lossConfig"] == {"method": "DAPO", "klBeta": 0.0}
    assert body["inferenceParameters"]["responseCandidatesCount"] == 4
    assert json.loads(body["inferenceParameters"]["extraBody"]) == {"stop": ["\n"]}
    assert body["chunkSize"] == 8 and body["maxConcurrentRollouts"] == 16
    assert body["evalPasses"] == ["greedy"]


def test_an_unknown_source_job_names_the_key(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", f"backend.base_url={server.base_url}", "source_job=nope", "dry_run=true"]) == 2
    assert 'source_job="nope": cannot read the job to copy' in capsys.readouterr().err


def test_fireworks_bounds_of_the_new_keys_fail_before_any_contact(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw-test-key")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        args = ["launch", "backend=fireworks", f"backend.base_url={url}", "backend.account_id=a"]
        args += ["node_count=0", "max_concurrent_rollouts=5000", "training.lora_rank=64"]
        assert cli.main(args) == 2
        with pytest.raises(BlockingIOError):
            listener.accept()
    err = capsys.readouterr().err
    assert "training.lora_rank=64: must be at most 32" in err
    assert "node_count=0: must be at least 1" in err
    assert "max_concurrent_rollouts=5000: must be at most 1024" in err
