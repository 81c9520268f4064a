"""`rftlab compare` on run records as the launcher writes them: the table, compare.csv and rewards.png."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rftlab.runs import compare
from rftlab.runs.overrides import run_labels
from rftlab.runs.records import RunRecord, find_runs, write_invalid_point


def record_run(
    sweep: Path,
    job_id: str,
    overrides: list[str],
    rewards: list[float] | None,
    state: str = "JOB_STATE_COMPLETED",
    final: dict | None = None,
) -> RunRecord:
    """A run folder like the launcher's: plan, create response, the job as last seen, its metrics."""
    record = RunRecord(sweep / job_id)
    body = {"trainingConfig": {"baseModel": "tiny-arith"}}
    record.write_plan({}, json.dumps({"body": body}), {"overrides": overrides, "dry_run": False})
    job = {
        "name": f"accounts/local/reinforcementFineTuningJobs/{job_id}",
        "state": state,
        "status": {"code": "OK", "message": "evaluator exploded" if state == "JOB_STATE_FAILED" else ""},
        "trainingConfig": {"baseModel": "tiny-arith", "outputModel": f"accounts/local/models/{job_id}"},
    }
    if final is not None:
        job["outputMetrics"] = json.dumps(final)
    record.write_response(job)
    record.write_job(job)
    if rewards is not None:
        record.write_metrics([{"step": i + 1, "reward_mean": r, "loss": 0.1} for i, r in enumerate(rewards)])
    return record


def make_sweep(root: Path) -> Path:
    sweep = root / "outputs" / "2026-01-01" / "10-00-00-000000"
    common = ["sweeps=lr_rank", "backend.base_url=http://127.0.0.1:1", "wandb=offline"]
    final = {"reward_first": 0.2, "reward_last": 0.6, "eval_reward_before": 0.3, "eval_reward_after": 0.55}
    record_run(
        sweep,
        "job-a",
        [*common, "training.learning_rate=0.001", "training.lora_rank=8"],
        [0.2, 0.4, 0.6],
        final=final,
    )
    record_run(sweep, "job-b", [*common, "training.learning_rate=0.001", "training.lora_rank=16"], [0.1, 0.3])
    record_run(
        sweep,
        "job-c",
        [*common, "training.learning_rate=0.003", "training.lora_rank=8"],
        [],
        "JOB_STATE_FAILED",
    )
    refused = RunRecord(sweep / "job-d")
    refused.write_plan(
        {}, "{}", {"overrides": [*common, "training.learning_rate=0.003", "training.lora_rank=16"]}
    )
    refused.write_response(
        {"error": {"status": 400, "message": "trainingConfig.maxContextLength: too small"}}
    )
    write_invalid_point(
        sweep, 4, [*common, "training.lora_rank=12"], ["training.lora_rank=12: must be a power of two"]
    )
    return sweep


def test_points_keep_only_the_overrides_that_differ(tmp_path):
    points = compare.collect(make_sweep(tmp_path), refresh=False)
    assert [p.job for p in points] == ["job-a", "job-b", "job-c", "job-d", "invalid-4"]
    assert compare.differing_keys(points) == ["training.learning_rate", "training.lora_rank"]
    by_job = {p.job: p for p in points}
    assert (by_job["job-a"].reward_first, by_job["job-a"].reward_last) == (0.2, 0.6)
    assert (by_job["job-a"].eval_before, by_job["job-a"].eval_after) == (0.3, 0.55)
    assert (by_job["job-b"].reward_first, by_job["job-b"].reward_last) == (0.1, 0.3)  # from the series
    assert by_job["job-b"].eval_before is None
    assert (by_job["job-c"].state, by_job["job-c"].error) == ("failed", "evaluator exploded")
    assert (by_job["job-d"].state, by_job["job-d"].error) == (
        "refused",
        "trainingConfig.maxContextLength: too small",
    )
    assert by_job["invalid-4"].state == "invalid" and "power of two" in by_job["invalid-4"].error


def test_compare_writes_the_table_csv_and_plot(tmp_path, capsys):
    sweep = make_sweep(tmp_path)
    assert compare.main([str(sweep), "--no-refresh"]) == 0
    out = capsys.readouterr().out
    assert "training.learning_rate=0.001 training.lora_rank=8" in out
    assert "0.200 -> 0.600" in out and "0.300 -> 0.550" in out and "accounts/local/models/job-a" in out
    with (sweep / "compare.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["job"] for row in rows] == ["job-a", "job-b", "job-c", "job-d", "invalid-4"]
    assert rows[0]["training.learning_rate"] == "0.001" and rows[0]["training.lora_rank"] == "8"
    assert rows[1]["steps"] == "2" and rows[1]["eval_reward_after"] == ""
    assert rows[3]["state"] == "refused" and rows[4]["training.lora_rank"] == "12"
    assert "backend.base_url" not in rows[0] and "sweeps" not in rows[0]
    assert (sweep / "rewards.png").read_bytes()[:4] == b"\x89PNG"


def test_the_plot_has_one_curve_per_job_with_steps(tmp_path):
    points = compare.collect(make_sweep(tmp_path), refresh=False)
    lines = compare.reward_figure(points, compare.differing_keys(points)).axes[0].get_lines()
    assert [line.get_label() for line in lines] == [
        "training.learning_rate=0.001 training.lora_rank=8",
        "training.learning_rate=0.001 training.lora_rank=16",
    ]
    assert list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[0].get_ydata()) == [0.2, 0.4, 0.6]


def test_a_single_run_is_labelled_by_all_its_overrides(tmp_path):
    record = record_run(tmp_path / "launch", "solo", ["training.epochs=1", "wait=true"], [0.5])
    points = compare.collect(record.path, refresh=False)
    assert compare.differing_keys(points) == ["training.epochs"]


def test_an_empty_folder_is_an_error(tmp_path, capsys):
    assert compare.main([str(tmp_path), "--no-refresh"]) == 1
    assert "no run records" in capsys.readouterr().err


def test_rftlab_wait_labels_each_job_by_what_sets_it_apart(tmp_path):
    sweep = make_sweep(tmp_path)
    labels = run_labels(find_runs(sweep))
    assert labels["job-a"] == "training.learning_rate=0.001 training.lora_rank=8"
    assert labels["job-d"] == "training.learning_rate=0.003 training.lora_rank=16"


def test_a_run_that_cannot_be_refreshed_shows_its_recorded_state(tmp_path, capsys):
    record_run(tmp_path / "launch", "still-running", ["training.epochs=1"], None, state="JOB_STATE_RUNNING")
    (point,) = compare.collect(tmp_path / "launch", refresh=True)  # its meta.json names no backend
    assert point.state == "running"
    assert "still-running: not refreshed, as recorded" in capsys.readouterr().err


def test_long_curves_are_drawn_as_a_trailing_moving_average():
    assert compare.moving_average([1.0, 0.0, 1.0, 1.0], 2) == [1.0, 0.5, 0.5, 1.0]
    assert compare.moving_average([0.2, 0.4], 1) == [0.2, 0.4]
    long_run = compare.Point("long", {}, "completed", rewards=[(s, float(s % 2)) for s in range(1, 101)])
    (line,) = compare.reward_figure([long_run], []).axes[0].get_lines()
    assert list(line.get_ydata())[-1] == pytest.approx(0.4)  # steps 96-100 give 0, 1, 0, 1, 0 (5% of 100)


def test_a_job_that_measured_only_the_greedy_pass_shows_that_eval_reward(tmp_path):
    sweep = tmp_path / "outputs" / "2026-01-01" / "11-00-00-000000"
    final = {"eval_reward_greedy_before": 0.25, "eval_reward_greedy_after": 0.5}
    record_run(sweep, "job-g", ["eval_passes=[greedy]", "training.lora_rank=8"], [0.1], final=final)
    record_run(sweep, "job-s", ["eval_passes=[greedy]", "training.lora_rank=16"], [0.1], final={})
    by_job = {p.job: p for p in compare.collect(sweep, refresh=False)}
    assert (by_job["job-g"].eval_before, by_job["job-g"].eval_after) == (0.25, 0.5)
    assert by_job["job-s"].eval_before is None
