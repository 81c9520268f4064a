"""One failing case per validation rule; each error names the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from rftlab import cli
from rftlab.launch.plan import build_plan
from rftlab.launch.spec import SpecError

# (overrides, fragments every one of which the error must contain)
RULES = {
    "both base_model and warm_start_from": (
        ["model.warm_start_from=accounts/me/models/m1"],
        ["model:", "exactly one of base_model and warm_start_from", "'tiny-arith'", "accounts/me/models/m1"],
    ),
    "neither base_model nor warm_start_from": (
        ["model.base_model=null"],
        ["model:", "exactly one of base_model and warm_start_from"],
    ),
    "dataset required": (["dataset.path=null"], ["dataset:", "required", "path", "id"]),
    "dataset path and id": (["dataset.id=other"], ["dataset:", "exactly one of path", "'other'"]),
    "one evaluation source": (
        ["dataset.evaluation_path=a.jsonl", "dataset.evaluation_dataset=b"],
        ["dataset:", "at most one of evaluation_path and evaluation_dataset"],
    ),
    "evaluator required": (["evaluator.path=null"], ["evaluator:", "required", "path", "id"]),
    "wandb entity missing": (
        ["wandb=on"],
        ["wandb:", "missing: wandb.entity (set wandb.entity=TEAM", "or turn W&B off with wandb=off"],
    ),
    "max_rows positive": (["dataset.max_rows=0"], ["dataset.max_rows=0", "greater than or equal to 1"]),
    "max_rows an integer": (["dataset.max_rows=2.5"], ["dataset.max_rows=2.5", "valid integer"]),
    "max_rows only with path": (
        ["dataset=fireworks_resource", "dataset.max_rows=10"],
        ["dataset:", "max_rows=10 cuts a local file (path)", "drop dataset.max_rows"],
    ),
    "wandb set while off": (["wandb.project=p"], ["wandb:", "wandb.project='p'", "wandb=on"]),
    "wandb offline on fireworks": (
        ["wandb=offline", "backend=fireworks", "backend.account_id=a"],
        ["wandb=offline works with backend=local only"],
    ),
    "eval passes known": (
        ["eval_passes=[sampled,beam]"],
        ['eval_passes=["sampled", "beam"]', "unknown pass 'beam'", "sampled and/or greedy"],
    ),
    "eval passes non-empty": (["eval_passes=[]"], ["eval_passes=[]", "must be a non-empty list"]),
    "eval passes once each": (["eval_passes=[greedy,greedy]"], ["eval_passes=", "lists a pass twice"]),
    "eval passes on fireworks": (
        ["eval_passes=[greedy]", "backend=fireworks", "backend.account_id=a"],
        ["eval_passes=[greedy] works with backend=local only", "drop it (eval_passes=null)"],
    ),
    "epochs >= 1": (["training.epochs=0"], ["training.epochs=0", "must be at least 1"]),
    "learning rate > 0": (["training.learning_rate=0"], ["training.learning_rate=0", "must be above 0"]),
    "lora rank power of two": (["training.lora_rank=12"], ["training.lora_rank=12", "power of two"]),
    "candidates >= 2": (
        ["sampling.response_candidates_count=1"],
        ["sampling.response_candidates_count=1", "must be at least 2"],
    ),
    "temperature > 0": (["sampling.temperature=0"], ["sampling.temperature=0", "must be above 0"]),
    "top_p > 0": (["sampling.top_p=0"], ["sampling.top_p=0", "must be above 0"]),
    "top_p <= 1": (["sampling.top_p=1.5"], ["sampling.top_p=1.5", "must be at most 1"]),
    "top_k >= 0": (["sampling.top_k=-1"], ["sampling.top_k=-1", "must be at least 0"]),
    "extra_body not an object": (["sampling.extra_body='[1, 2]'"], ["sampling.extra_body", "JSON object"]),
    "extra_body not JSON": (["sampling.extra_body='{stop'"], ["sampling.extra_body", "JSON object"]),
    "kl_beta only with grpo": (
        ["training.loss_method=dapo"],
        ["training:", "kl_beta=0.001 with loss_method=dapo", "training.kl_beta=0"],
    ),
    "kl_beta >= 0": (["training.kl_beta=-0.1"], ["training.kl_beta=-0.1", "must be at least 0"]),
    "loss method": (
        ["training.loss_method=ppo"],
        ['training.loss_method="ppo"', "'grpo', 'dapo' or 'gspo-token'"],
    ),
    "chunk size": (["training.chunk_size=0"], ["training.chunk_size=0", "-1 to disable"]),
    "unknown key": (["+training.epoch=3"], ["training.epoch=3", "unknown key", "epochs, learning_rate"]),
    "output format": (["output=yaml"], ['output="yaml"', "'text', 'json' or 'flag'"]),
    "job id format": (["job_id=9-lives"], ['job_id="9-lives"', "should match pattern"]),
    "dataset file exists": (["dataset.path=/nonexistent/rows.jsonl"], ["dataset.path=", "no such file"]),
    "base url scheme": (["backend.base_url=localhost:8317"], ["backend.base_url=", "should match pattern"]),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_refuses_with_key_value_and_what_is_allowed(rule, compose_config, tmp_path):
    overrides, fragments = RULES[rule]
    with pytest.raises(SpecError) as caught:
        build_plan(compose_config([*overrides, "dry_run=true"]), cwd=tmp_path)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_online_wandb_key_is_required(compose_config, tmp_path):
    with pytest.raises(SpecError) as caught:
        build_plan(compose_config(["wandb=on", "wandb.entity=team"]), cwd=tmp_path)
    assert "missing: WANDB_API_KEY (export WANDB_API_KEY=...)" in str(caught.value)


def test_every_missing_wandb_setting_is_named_in_one_error(compose_config, tmp_path):
    with pytest.raises(SpecError) as caught:
        build_plan(compose_config(["wandb=on", "wandb.project=null"]), cwd=tmp_path)
    [problem] = caught.value.problems
    assert problem.key == "wandb"
    for how in ("wandb.project=NAME", "wandb.entity=TEAM", "export WANDB_API_KEY=..."):
        assert how in problem.message


def test_offline_wandb_needs_no_entity_and_no_key(compose_config, tmp_path):
    plan = build_plan(compose_config(["wandb=offline", "dry_run=true"]), cwd=tmp_path)
    assert plan.spec.wandb.entity is None
    with pytest.raises(SpecError) as caught:
        build_plan(compose_config(["wandb=offline", "wandb.project=null"]), cwd=tmp_path)
    message = str(caught.value)
    assert "missing: wandb.project" in message
    assert "wandb.entity" not in message and "WANDB_API_KEY" not in message


def test_eval_passes_reach_the_request_after_eval_auto_carveout_only_when_set(compose_config, tmp_path):
    body = build_plan(compose_config(["eval_passes=[greedy,sampled]", "dry_run=true"]), cwd=tmp_path).body
    assert body["evalPasses"] == ["greedy", "sampled"]
    assert list(body).index("evalPasses") == list(body).index("evalAutoCarveout") + 1
    assert build_plan(compose_config(["eval_passes=greedy", "dry_run=true"]), cwd=tmp_path).body[
        "evalPasses"
    ] == ["greedy"]
    assert "evalPasses" not in build_plan(compose_config(["dry_run=true"]), cwd=tmp_path).body


def test_every_problem_is_reported_at_once(compose_config, tmp_path):
    overrides = ["training.epochs=0", "sampling.top_k=-3", "+sampling.seed=1"]
    with pytest.raises(SpecError) as caught:
        build_plan(compose_config(overrides), cwd=tmp_path)
    assert [p.key for p in caught.value.problems] == ["sampling.top_k", "sampling.seed", "training.epochs"]


def test_the_cli_reports_invalid_config_and_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "training.lora_rank=12", "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert "training.lora_rank=12: must be a power of two" in err


def test_an_unknown_group_option_lists_the_options(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "training=turbo", "dry_run=true"]) == 1
    err = capfd.readouterr().err
    assert "Could not find 'training/turbo'" in err
    for option in ("default", "dapo", "gspo_token", "fireworks_default"):
        assert f"\t{option}\n" in err


def test_a_sweep_validates_every_point_before_reporting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["launch", "-m", "training.lora_rank=8,12,16", "dry_run=true", "output=json"])
    captured = capsys.readouterr()
    assert code == 2
    assert "training.lora_rank=12: must be a power of two" in captured.err
    errors = list(tmp_path.glob("outputs/*/*/invalid-1/error.json"))
    assert len(errors) == 1
    assert len(list(tmp_path.glob("outputs/*/*/*/request.json"))) == 2


def test_a_sweep_reports_a_problem_shared_by_its_points_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["launch", "-m", "training.lora_rank=8,12", "training.learning_rate=1e-3,2e-3", "wandb=on"]
    assert cli.main([*argv, "dry_run=true"]) == 2
    err = capsys.readouterr().err
    assert "4 of 4 points are invalid" in err
    assert err.count("export WANDB_API_KEY=...") == 1
    assert "all 4 points: wandb: wandb=on needs" in err
    assert "points 2-3: training.lora_rank=12: must be a power of two" in err
    assert len(list(tmp_path.glob("outputs/*/*/invalid-*/error.json"))) == 4


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=warm_start", "model.warm_start_from: required (the config says ???)"),
        (
            "dataset.path=${oc.env:RFTLAB_TEST_UNSET}",
            "dataset.path: KeyError raised while resolving interpolation",
        ),
    ],
)
def test_unresolvable_values_name_their_key(override, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", override, "dry_run=true"]) == 2
    assert expected in capsys.readouterr().err
