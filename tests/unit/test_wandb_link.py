"""The launcher's side of W&B: what `wandbConfig` carries per backend, and the run read back and grouped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rftlab import cli
from rftlab.launch.plan import build_plan
from rftlab.runs import wandb_link
from rftlab.runs.records import RunRecord
from rftlab.server.api_common import parse_body
from rftlab.server.errors import ApiError
from rftlab.server.schemas import JobRequest


def plan_for(compose_config, tmp_path: Path, overrides: list[str], extra: list[str] = ()):
    """Compose with `overrides` (what the command line said) plus `extra` given only to the composition."""
    return build_plan(compose_config([*overrides, *extra, "dry_run=true"]), cwd=tmp_path, overrides=overrides)


def test_local_sweep_point_carries_run_id_group_tags_and_config(compose_config, tmp_path, marker_secrets):
    overrides = ["sweeps=lr_rank", "wandb=offline", "training.lora_rank=8", "training.learning_rate=0.001"]
    plan = plan_for(compose_config, tmp_path, overrides)
    wandb = plan.body["wandbConfig"]
    assert wandb == {  # an offline run needs no W&B key, so none is sent
        "enabled": True,
        "project": "rftlab",
        "mode": "offline",
        "runId": plan.job_id,
        "group": "lr_rank",
        "tags": ["training.lora_rank=8", "training.learning_rate=0.001"],
        "config": {"training.lora_rank": 8, "training.learning_rate": 0.001},
    }
    assert marker_secrets[1] not in plan.request_json()


def test_the_w_and_b_group_does_not_change_the_job_id(compose_config, tmp_path):
    one = plan_for(compose_config, tmp_path, ["sweeps=lr_rank", "wandb=offline"])
    other = plan_for(compose_config, tmp_path, ["wandb=offline"], extra=["sweeps=lr_rank"])
    assert one.job_id == other.job_id
    assert one.body["wandbConfig"]["group"] == "lr_rank" and "group" not in other.body["wandbConfig"]


def test_hosted_backend_gets_only_fireworks_fields(compose_config, tmp_path, marker_secrets):
    overrides = ["backend=fireworks", "backend.account_id=acct", "wandb=on", "wandb.entity=team"]
    plan = plan_for(compose_config, tmp_path, [*overrides, "sweeps=lr_rank", "training.lora_rank=8"])
    assert plan.body["wandbConfig"] == {
        "enabled": True,
        "apiKey": "***",
        "project": "rftlab",
        "entity": "team",
        "runId": plan.job_id,
    }


def test_without_w_and_b_the_body_has_no_wandb_config(compose_config, tmp_path):
    assert "wandbConfig" not in plan_for(compose_config, tmp_path, ["sweeps=lr_rank"]).body


def test_the_local_server_accepts_the_extension_fields_and_checks_tags():
    body = {
        "dataset": "d",
        "evaluator": "e",
        "trainingConfig": {"baseModel": "tiny-arith"},
        "wandbConfig": {
            "enabled": True,
            "mode": "offline",
            "group": "g",
            "tags": ["a=1"],
            "config": {"a": 1},
        },
    }
    assert parse_body(JobRequest, body).dump()["wandbConfig"] == body["wandbConfig"]
    body["wandbConfig"]["tags"] = ["x" * 65]
    with pytest.raises(ApiError, match="64 characters"):
        parse_body(JobRequest, body)


def test_missing_wandb_settings_are_one_error_before_anything_is_sent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(
        [
            "launch",
            "backend=fireworks",
            "backend.account_id=acct",
            "backend.base_url=http://127.0.0.1:9",
            "wandb=on",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "wandb.entity" in err and "WANDB_API_KEY" in err
    assert not list(tmp_path.rglob("response.json"))  # nothing was submitted


class FakeHostedRun:
    def __init__(self) -> None:
        self.group, self.tags, self.config, self.updates = None, ["from-fireworks"], {"lr": 1}, 0

    def update(self) -> None:
        self.updates += 1


class FakeWandbApi:
    """Stands in for the hosted W&B service, which cannot be reached from here."""

    def __init__(self, fail: bool = False) -> None:
        self.runs: dict[str, FakeHostedRun] = {}
        self.fail = fail

    def run(self, path: str) -> FakeHostedRun:
        if self.fail:
            raise ConnectionError("api.wandb.ai unreachable")
        return self.runs.setdefault(path, FakeHostedRun())


def hosted_record(tmp_path: Path) -> tuple[RunRecord, dict]:
    record = RunRecord(tmp_path / "job-x")
    overrides = ["sweeps=lr_rank", "backend=fireworks", "training.lora_rank=8"]
    record.write_plan(
        {"training": {"lora_rank": 8}}, "{}", {"backend": {"kind": "fireworks"}, "overrides": overrides}
    )
    job = {
        "state": "JOB_STATE_RUNNING",
        "wandbConfig": {
            "enabled": True,
            "project": "p",
            "entity": "team",
            "runId": "job-x",
            "url": "https://wandb.ai/team/p/runs/job-x",
        },
    }
    return record, job


def test_hosted_run_is_grouped_tagged_and_configured_once(tmp_path):
    record, job = hosted_record(tmp_path)
    api = FakeWandbApi()
    link = wandb_link.record_run(record, job, api=api)
    run = api.runs["team/p/job-x"]
    assert (run.group, run.tags, run.config, run.updates) == (
        "lr_rank",
        ["from-fireworks", "training.lora_rank=8"],
        {"lr": 1, "training.lora_rank": 8},
        1,
    )
    assert (
        link["applied"]
        and json.loads((record.path / "wandb.json").read_text())["url"] == job["wandbConfig"]["url"]
    )
    wandb_link.record_run(record, job, api=api)
    assert run.updates == 1


def test_an_unreachable_wandb_api_is_recorded_and_retried_a_few_times(tmp_path):
    record, job = hosted_record(tmp_path)
    for attempt in range(1, wandb_link.HOSTED_ATTEMPTS + 2):
        link = wandb_link.record_run(record, job, api=FakeWandbApi(fail=True))
        assert link["applied"] is False and "unreachable" in link["error"]
        assert link["attempts"] == min(attempt, wandb_link.HOSTED_ATTEMPTS)


def test_a_job_without_a_run_yet_records_nothing(tmp_path):
    record, job = hosted_record(tmp_path)
    del job["wandbConfig"]["url"]
    assert wandb_link.record_run(record, job, api=FakeWandbApi()) is None
    assert not (record.path / "wandb.json").exists()
