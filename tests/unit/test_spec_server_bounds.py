"""The launcher refuses what the server would refuse before it sends anything: a launch at a backend where nothing
listens ends with the config problem (exit 2), never a connection attempt, and names the key."""

from __future__ import annotations

import socket

import pytest

from rftlab import cli


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("training.learning_rate=5", "training.learning_rate=5: must be at most 1"),
        (
            "sampling.response_candidates_count=1000",
            "sampling.response_candidates_count=1000: must be at most 256",
        ),
        ("training.lora_rank=512", "training.lora_rank=512: must be at most 256"),
        ("output_model=../../x", 'output_model="../../x": must be a model id'),
        (
            "output_model=accounts/a/models/Bad_Id",
            'output_model="accounts/a/models/Bad_Id": must be a model id',
        ),
    ],
)
def test_out_of_bounds_values_stop_the_launch_before_any_request(
    override, named, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    base_url = f"backend.base_url=http://127.0.0.1:{closed_port()}"
    assert cli.main(["launch", override, base_url]) == 2
    assert named in capsys.readouterr().err


def test_a_full_output_model_name_is_accepted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "output_model=accounts/local/models/my-model", "dry_run=true"]) == 0
    assert "accounts/local/models/my-model" in capsys.readouterr().out


def test_an_offline_wandb_run_sends_no_key(compose_config, tmp_path, marker_secrets):
    from rftlab.launch.plan import build_plan

    offline = build_plan(compose_config(["wandb=offline", "dry_run=true"]), cwd=tmp_path)
    online = build_plan(compose_config(["wandb=on", "wandb.entity=team", "dry_run=true"]), cwd=tmp_path)
    assert "apiKey" not in offline.body["wandbConfig"]
    assert "apiKey" in online.body["wandbConfig"]
