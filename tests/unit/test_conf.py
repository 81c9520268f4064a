"""Every config option, experiment and sweep file composes and validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rftlab import cli
from rftlab.launch.plan import build_plan
from rftlab.launch.spec import RunSpec
from rftlab.paths import conf_dir, sweeps_dir

GROUPS = ["backend", "model", "dataset", "evaluator", "sampling", "training", "wandb"]
# options that need a value only the user can give, and what a user would pass
NEEDS = {
    ("model", "warm_start"): ["model.warm_start_from=accounts/me/models/earlier-run"],
    ("model", "custom"): ["model.base_model=/models/my-chat-model"],
    ("wandb", "on"): ["wandb.entity=my-team"],
    ("backend", "fireworks"): ["backend.account_id=my-account"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(group, option, monkeypatch, tmp_path, compose_config):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    overrides = [f"{group}={option}", "dry_run=true", *NEEDS.get((group, option), [])]
    if group == "wandb" and option == "offline":
        overrides.append("backend=local")
    plan = build_plan(compose_config(overrides), cwd=tmp_path)
    assert isinstance(plan.spec, RunSpec)
    assert plan.job_id[0].isalpha() and len(plan.job_id) <= 63


def test_every_option_file_opens_with_the_command_that_uses_it():
    files = [p for p in conf_dir().rglob("*.yaml")] + list(sweeps_dir().glob("*.yaml"))
    for path in files:
        comments = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert any("rftlab launch" in line for line in comments), f"{path} has no command in its header"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_plans_through_the_cli(experiment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra = ["backend.account_id=acct"] if "fireworks" in experiment else []
    assert cli.main(["launch", f"experiment={experiment}", "dry_run=true", "output=json", *extra]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["params"]["reinforcementFineTuningJobId"]


@pytest.mark.parametrize("sweep", sorted(p.stem for p in sweeps_dir().glob("*.yaml")))
def test_every_sweep_plans_every_point(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    text = (sweeps_dir() / f"{sweep}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert cli.main(["launch", f"sweeps={sweep}", "dry_run=true", "output=json"]) == 0
    requests = json.loads(capsys.readouterr().out)
    job_ids = {r["params"]["reinforcementFineTuningJobId"] for r in requests}
    assert len(requests) >= 2 and len(job_ids) == len(requests)
    recorded = {p.parent.name for p in Path("outputs").rglob("request.json")}
    assert recorded == job_ids


def test_the_arithmetic_bundle_resolves_from_any_directory(tmp_path, compose_config):
    config = compose_config([])
    assert Path(config["dataset"]["path"]).is_file()
    assert Path(config["evaluator"]["path"]).is_file()
    plan = build_plan(config, cwd=tmp_path)
    assert plan.dataset.local is not None and plan.dataset.local.path.is_absolute()


def test_relative_user_paths_resolve_against_the_launch_directory(tmp_path, compose_config):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.jsonl").write_text('{"messages":[{"role":"user","content":"hi"}]}\n')
    plan = build_plan(compose_config(["dataset.path=data/mine.jsonl", "dry_run=true"]), cwd=tmp_path)
    assert plan.dataset.local.path == tmp_path / "data" / "mine.jsonl"
    assert plan.config["dataset"]["path"] == str(tmp_path / "data" / "mine.jsonl")


def test_launches_in_the_same_microsecond_get_their_own_folders(tmp_path, monkeypatch):
    from datetime import datetime

    from rftlab.runs import records

    frozen = datetime(2026, 1, 2, 3, 4, 5, 678901)

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return frozen

    monkeypatch.setattr(records, "datetime", FrozenClock)
    folders = [records.new_launch_dir(tmp_path / "outputs") for _ in range(3)]
    assert [Path(f).name for f in folders] == ["03-04-05-678901", "03-04-05-678901-2", "03-04-05-678901-3"]
    assert all(Path(f).is_dir() for f in folders)


def test_the_help_answers_how_to_run_on_fireworks_sweep_and_find_records(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--help"]) == 0
    top = capsys.readouterr().out
    assert cli.main(["launch", "--help"]) == 0
    launch = capsys.readouterr().out
    for text in (top, launch):
        for fragment in (
            "backend=fireworks",
            "FIREWORKS_API_KEY",
            "sweeps=lr_rank",
            "outputs/<date>/<time>/<job id>",
        ):
            assert fragment in text
    for group in [*GROUPS, "experiment", "sweeps"]:
        assert f"\n{group}: " in launch
    assert not (tmp_path / "outputs").exists()  # asking for help launches nothing


@pytest.mark.parametrize("verb", sorted(set(cli.COMMANDS) - {"launch"}))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([verb, "--help"])
    assert stop.value.code == 0
    assert f"rftlab {verb}" in capsys.readouterr().out
