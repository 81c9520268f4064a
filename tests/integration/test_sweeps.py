"""Sweeps end to end on the real local backend: launch a sweep file, wait, compare, and find every step in W&B's
offline run folders and in the run records."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from server_harness import LocalServer, project_folder

from rftlab import cli
from rftlab.runs import compare
from rftlab.runs.records import TERMINAL_STATES, find_runs
from rftlab.runs.wandb_link import LINK_FILE
from wandb_files import history, run_settings, summary

pytestmark = pytest.mark.slow
GOOD_END_STATES = {"JOB_STATE_COMPLETED", "JOB_STATE_EARLY_STOPPED"}


@dataclass
class OfflineWandbServer(LocalServer):
    """`rftlab serve` whose job workers write W&B runs offline under `wandb_dir`."""

    wandb_dir: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "WANDB_MODE": "offline", "WANDB_DIR": str(self.wandb_dir)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-server")
    (root / "wandb").mkdir()
    with OfflineWandbServer.under(root, wandb_dir=root / "wandb") as running:
        yield running


@pytest.fixture
def workdir(server, tmp_path, monkeypatch):
    """A project folder with 40 rows: 4 held out for eval, 36 trained on in 3 chunks of 12."""
    with project_folder(server, tmp_path, monkeypatch, rows=40) as folder:
        yield folder


def sweep_args(server: LocalServer, sweep: str, *overrides: str) -> list[str]:
    return [
        "launch",
        f"sweeps={sweep}",
        f"backend.base_url={server.base_url}",
        "backend.poll_interval_s=0.5",
        "dataset.path=rows.jsonl",
        "training.chunk_size=12",
        "sampling.response_candidates_count=4",
        *overrides,
    ]


def test_a_2x2_sweep_runs_to_the_end_is_compared_and_logged_to_wandb(server, workdir, marker_secrets, capfd):
    assert cli.main(sweep_args(server, "lr_rank", "wandb=offline", "training.learning_rate=2e-3,4e-3")) == 0
    runs = find_runs(workdir / "outputs")
    assert len(runs) == 4 and len({run.path.parent for run in runs}) == 1
    sweep_dir = runs[0].path.parent

    assert cli.main(["wait", str(sweep_dir), "--poll", "0.5"]) == 0
    for run in runs:
        assert run.state in GOOD_END_STATES, run.read_json("job.json")["status"]

    assert compare.main([str(sweep_dir)]) == 0
    table = capfd.readouterr().out
    points = compare.collect(sweep_dir, refresh=False)
    keys = compare.differing_keys(points)
    assert keys == ["training.learning_rate", "training.lora_rank"]
    assert {run.job_id for run in runs} == {point.job for point in points}
    for point in points:
        assert point.job in table and point.output_model.endswith(point.job)
        assert len(point.rewards) == 3 and point.reward_first is not None and point.eval_after is not None
    with (sweep_dir / compare.CSV_NAME).open() as stream:
        rows = list(csv.DictReader(stream))
    assert sorted((row["training.learning_rate"], row["training.lora_rank"]) for row in rows) == [
        ("0.002", "16"),
        ("0.002", "8"),
        ("0.004", "16"),
        ("0.004", "8"),
    ]
    assert (sweep_dir / compare.PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = compare.reward_figure(points, keys).axes[0].get_lines()
    assert len(lines) == 4
    assert {line.get_label() for line in lines} == {
        f"training.learning_rate={lr} training.lora_rank={rank}"
        for lr in ("0.002", "0.004")
        for rank in (8, 16)
    }

    for run in runs:
        job, metrics = run.read_json("job.json"), run.read_json("metrics.json")["metrics"]
        link = run.read_json(LINK_FILE)
        assert link["url"] == job["wandbConfig"]["url"] and link["url"].startswith("file://")
        assert "apiKey" not in job["wandbConfig"]
        run_folder = Path(link["url"].removeprefix("file://"))
        assert run_folder.parent.parent == server.wandb_dir  # $WANDB_DIR/wandb/offline-run-<time>-<job id>
        settings = run_settings(run_folder)
        assert settings["id"] == run.job_id and settings["group"] == "lr_rank"
        assert settings["tags"] == link["tags"]
        assert f"training.lora_rank={job['trainingConfig']['loraRank']}" in settings["tags"]
        assert link["config"].items() <= settings["config"].items()
        # every number W&B got is in the run record, step by step, and the final metrics too
        # (the rollouts go to W&B as tables: the eval pass before training has a row of its own at step 0)
        logged = [row for row in history(run_folder) if "step" in row]
        assert [row["_step"] for row in logged] == [m["step"] for m in metrics]
        for row, recorded in zip(logged, metrics, strict=True):
            assert {k: v for k, v in row.items() if not k.startswith(("_", "rollouts/"))} == recorded
        final = json.loads(job["outputMetrics"])
        assert final and {k: summary(run_folder)[k] for k in final} == final

    checked = [p for root in (workdir / "outputs", server.wandb_dir) for p in root.rglob("*") if p.is_file()]
    checked += [server.home / "server.log"]
    for secret in marker_secrets:
        for path in checked:
            assert secret.encode() not in path.read_bytes(), f"{secret} leaked into {path}"

    # the same sweep again: every point found on the backend, nothing new submitted
    before = set(server.local_job_ids())
    assert cli.main(sweep_args(server, "lr_rank", "wandb=offline", "training.learning_rate=2e-3,4e-3")) == 0
    assert set(server.local_job_ids()) == before
    out = capfd.readouterr().out
    assert out.count("launched before: reattached, nothing duplicated") == 4 and "created" not in out


def test_a_sweep_records_invalid_and_refused_points_and_runs_the_rest(server, workdir, capsys):
    # rank 12 fails validation (not a power of two); an evaluation dataset the backend does not have passes it
    # (the launcher cannot know), and the backend refuses it
    overrides = [
        "training.learning_rate=3e-3",
        "training.lora_rank=8,12",
        "dataset.evaluation_dataset=null,no-such-dataset",
    ]
    assert cli.main(sweep_args(server, "lr_rank", *overrides)) == 2
    err = capsys.readouterr().err
    assert err.count("training.lora_rank=12: must be a power of two") == 1  # said once for both points
    assert "points 2-3: training.lora_rank=12: must be a power of two" in err
    (sweep_dir,) = {run.path.parent for run in find_runs(workdir / "outputs")}
    assert cli.main(["wait", str(sweep_dir), "--poll", "0.5", "--quiet"]) == 0

    points = compare.collect(sweep_dir)
    assert compare.differing_keys(points) == ["training.lora_rank", "dataset.evaluation_dataset"]
    by_point = {
        (p.overrides["training.lora_rank"], p.overrides["dataset.evaluation_dataset"]): p for p in points
    }
    assert len(by_point) == 4
    trained, refused = by_point[("8", "null")], by_point[("8", "no-such-dataset")]
    assert trained.state in ("completed", "early_stopped") and trained.rewards
    assert refused.state == "refused" and "evaluationDataset" in refused.error
    assert by_point[("12", "null")].state == by_point[("12", "no-such-dataset")].state == "invalid"
    assert "must be a power of two" in by_point[("12", "no-such-dataset")].error
    on_server = set(server.local_job_ids())
    assert trained.job in on_server and refused.job not in on_server
    assert {run.state for run in find_runs(sweep_dir) if run.state} <= TERMINAL_STATES
