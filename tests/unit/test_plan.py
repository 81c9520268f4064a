"""Rendered requests: golden bodies, deterministic job ids, the firectl equivalent."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

import pytest

from rftlab.launch.plan import build_plan

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = {
    "default": [],
    "dapo_explore": ["training=dapo", "sampling=explore"],
    "wandb_on": ["wandb=on", "wandb.entity=team", "wandb.project=arith"],
    "fireworks_qwen3": [
        "experiment=qwen3_math_fireworks",
        "backend.account_id=acme",
        "output_model=qwen3-math-v1",
        "mcp_server.id=accounts/acme/mcpServers/calc",
        "dataset.evaluation_dataset=gsm8k-eval",
        'sampling.extra_body={stop: ["####"]}',
    ],
    "warm_start": [
        "model=warm_start",
        "model.warm_start_from=accounts/local/models/earlier",
        "training=gspo_token",
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_request_matches_golden(case, compose_config, tmp_path, monkeypatch, marker_secrets):
    """Regenerate with RFTLAB_UPDATE_GOLDEN=1 after an intended change (the bundled data's hash is in the ids)."""
    plan = build_plan(compose_config(CASES[case]), cwd=tmp_path)
    golden = GOLDEN / f"request_{case}.json"
    if os.environ.get("RFTLAB_UPDATE_GOLDEN"):
        golden.write_text(plan.request_json())
    assert plan.request_json() == golden.read_text()


def test_body_uses_fireworks_names_and_enums(compose_config, tmp_path):
    body = build_plan(compose_config(CASES["fireworks_qwen3"]), cwd=tmp_path).body
    assert body["lossConfig"] == {"method": "GRPO", "klBeta": 0.001}
    assert body["inferenceParameters"]["extraBody"] == '{"stop":["####"]}'
    assert body["trainingConfig"]["baseModel"] == "accounts/fireworks/models/qwen3-8b"
    assert body["evaluationDataset"] == "accounts/acme/datasets/gsm8k-eval"
    assert body["mcpServer"] == "accounts/acme/mcpServers/calc"
    for method, enum in (("dapo", "DAPO"), ("gspo_token", "GSPO_TOKEN")):
        assert (
            build_plan(compose_config([f"training={method}"]), cwd=tmp_path).body["lossConfig"]["method"]
            == enum
        )


def test_job_ids_are_deterministic_and_follow_the_request(compose_config, tmp_path):
    first = build_plan(compose_config([]), cwd=tmp_path)
    again = build_plan(compose_config([]), cwd=tmp_path)
    other = build_plan(compose_config(["training.learning_rate=1e-4"]), cwd=tmp_path)
    assert first.job_id == again.job_id
    assert other.job_id != first.job_id
    assert first.job_id.startswith("tiny-arith-arithmetic-train-")


def test_dataset_content_changes_the_upload_name_and_the_job_id(compose_config, tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"messages":[{"role":"user","content":"1+1?"}],"ground_truth":"2"}\n')
    before = build_plan(compose_config(["dataset.path=rows.jsonl"]), cwd=tmp_path)
    rows.write_text('{"messages":[{"role":"user","content":"1+2?"}],"ground_truth":"3"}\n')
    os.utime(rows, ns=(0, 1))  # a different mtime, as any real edit gives
    after = build_plan(compose_config(["dataset.path=rows.jsonl"]), cwd=tmp_path)
    assert before.dataset.name != after.dataset.name
    assert before.job_id != after.job_id


def test_max_rows_uploads_the_first_rows_as_a_dataset_of_their_own(compose_config, tmp_path):
    lines = [
        json.dumps({"messages": [{"role": "user", "content": f"{n}+1?"}], "ground_truth": str(n + 1)})
        for n in range(10)
    ]
    # a blank line is not a row; the last line has no newline
    (tmp_path / "data").mkdir()
    (tmp_path / "data/rows.jsonl").write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]))
    plans = {
        rows: build_plan(
            compose_config(["dataset.path=data/rows.jsonl", f"dataset.max_rows={rows or 'null'}"]),
            cwd=tmp_path,
        )
        for rows in (None, 3, 6, 10)
    }
    for rows in (3, 6, 10):
        local = plans[rows].dataset.local
        uploaded = local.content()
        assert uploaded.decode().splitlines() == lines[:rows] and uploaded.endswith(b"\n")
        assert local.sha256 == hashlib.sha256(uploaded).hexdigest()
        assert local.upload_name == f"rows-first{rows}.jsonl"
    whole = plans[None].dataset.local
    assert whole.content() == (tmp_path / "data/rows.jsonl").read_bytes()
    assert len({plan.dataset.name for plan in plans.values()}) == 4
    assert len({plan.job_id for plan in plans.values()}) == 4
    assert plans[3].job_id.startswith("tiny-arith-data-rows-first3-")


@pytest.mark.parametrize(
    "model",
    ["accounts/fireworks/models/" + "x" * 80, "accounts/fireworks/models/7b-model", "accounts/f/models/Q.W"],
)
def test_job_ids_fit_fireworks_rules(model, compose_config, tmp_path):
    job_id = build_plan(compose_config([f"model.base_model={model}"]), cwd=tmp_path).job_id
    assert len(job_id) <= 63 and job_id[0].isalpha()
    assert job_id == job_id.lower() and set(job_id) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_firectl_flags_carry_the_same_values(compose_config, tmp_path, capsys, monkeypatch):
    from rftlab import cli

    monkeypatch.chdir(tmp_path)
    overrides = CASES["fireworks_qwen3"]
    assert cli.main(["launch", *overrides, "dry_run=true", "output=flag"]) == 0
    comment, command = capsys.readouterr().out.strip().split("\n")
    assert comment == (
        "# firectl has no flag for a separate evaluation dataset (evaluationDataset=accounts/acme/datasets/"
        "gsm8k-eval); the REST request carries it"
    )
    words = shlex.split(command)
    assert words[:3] == ["firectl", "reinforcement-fine-tuning-job", "create"]
    assert "--evaluation-dataset" not in words
    flags, rest = {}, words[3:]
    while rest:
        flag, rest = rest[0], rest[1:]
        has_value = rest and not rest[0].startswith("--")
        flags[flag], rest = (rest[0], rest[1:]) if has_value else (True, rest)
    body = build_plan(compose_config(overrides), cwd=tmp_path).body
    assert flags["--base-model"] == body["trainingConfig"]["baseModel"]
    assert flags["--output-model"] == "qwen3-math-v1"
    assert flags["--rl-loss-method"] == "grpo"
    assert json.loads(flags["--extra-body"]) == {"stop": ["####"]}
    assert float(flags["--learning-rate"]) == body["trainingConfig"]["learningRate"]
    assert flags["--account-id"] == "acme"
    assert flags["--eval-auto-carveout"] is True


def test_new_job_keys_render_only_when_set_and_reach_firectl(compose_config, tmp_path):
    from rftlab.launch.render import firectl_command

    default = build_plan(compose_config([]), cwd=tmp_path).body
    assert not {"displayName", "nodeCount", "maxConcurrentRollouts", "maxConcurrentEvaluations"} & set(
        default
    )
    keys = [
        "display_name=arith run",
        "node_count=2",
        "max_concurrent_rollouts=32",
        "max_concurrent_evaluations=8",
    ]
    plan = build_plan(compose_config(keys), cwd=tmp_path)
    assert (plan.body["displayName"], plan.body["nodeCount"]) == ("arith run", 2)
    assert (plan.body["maxConcurrentRollouts"], plan.body["maxConcurrentEvaluations"]) == (32, 8)
    comment, command = firectl_command(plan.spec, plan.job_id, "local", plan.body).split("\n")
    assert "a display name (displayName=arith run)" in comment
    words = shlex.split(command)
    assert words[words.index("--nodes") + 1] == "2"
    assert words[words.index("--max-concurrent-rollouts") + 1] == "32"
    assert words[words.index("--max-concurrent-evaluations") + 1] == "8"
