"""`rftlab launch` and the verbs against the real local backend (`rftlab serve`) on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from server_harness import LocalServer, project_folder, wait_for

from rftlab import cli
from rftlab.runs.records import TERMINAL_STATES, find_runs


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("launch-server"), max_running_jobs=1) as running:
        yield running


@pytest.fixture
def workdir(server, tmp_path, monkeypatch):
    """A project folder with a small dataset; HOME is the server's, where its first start wrote the key."""
    with project_folder(server, tmp_path, monkeypatch, rows=16) as folder:
        yield folder


def launch_args(server: LocalServer, *overrides: str) -> list[str]:
    """A short job: 16 rows, one epoch, small groups; distinct `overrides` give distinct job ids."""
    return [
        "launch",
        f"backend.base_url={server.base_url}",
        "dataset.path=rows.jsonl",
        "training.epochs=1",
        "sampling.response_candidates_count=4",
        "backend.poll_interval_s=0.5",
        *overrides,
    ]


def test_a_dry_run_contacts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as listener:  # a port that would see any connection, /healthz included
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        for backend in ("local", "fireworks"):
            args = [f"backend={backend}", f"backend.base_url={url}", "backend.account_id=a", "dry_run=true"]
            assert cli.main(["launch", *args]) == 0
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert capsys.readouterr().out.count("nothing sent") == 2


def resources_on_server(server: LocalServer, collection: str) -> list[str]:
    with server.client() as client:
        listed = client.get(f"/v1/accounts/local/{collection}", params={"pageSize": 200}).json()[collection]
    return [item["name"].rsplit("/", 1)[1] for item in listed]


def test_repeated_launch_creates_no_duplicate(server, workdir, capsys):
    args = launch_args(server, "training.learning_rate=1e-3")
    assert cli.main(args) == 0
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("created") == 1 and "launched before: reattached" in out
    runs = find_runs(workdir / "outputs")
    assert len(runs) == 2 and runs[0].path.parent != runs[1].path.parent
    assert runs[0].job_id == runs[1].job_id
    assert server.local_job_ids().count(runs[0].job_id) == 1
    meta = runs[0].read_json("meta.json")["inputs"]
    for collection, key in (
        ("datasets", "dataset"),
        ("evaluators", "evaluator"),
    ):  # uploaded once, then reused
        assert resources_on_server(server, collection).count(meta[key]["name"].rsplit("/", 1)[1]) == 1
    for run in runs:
        assert {"config.yaml", "request.json", "response.json", "job.json", "status.jsonl", "meta.json"} <= {
            p.name for p in run.path.iterdir()
        }
        meta = run.read_json("meta.json")
        assert meta["inputs"]["dataset"]["sha256"] and meta["versions"]["rftlab"]
        assert run.read_json("response.json")["name"].endswith(run.job_id)


def test_the_launch_and_status_name_each_jobs_dashboard_page(server, workdir, capsys):
    assert cli.main(launch_args(server, "training.learning_rate=4e-3")) == 0
    (run,) = find_runs(workdir / "outputs")
    page = f"{server.base_url}/dashboard/fine-tuning/reinforcement/{run.job_id}"
    assert f"dashboard {page}" in capsys.readouterr().out
    assert cli.main(["status", "--no-refresh"]) == 0
    assert f"{run.job_id}  {page}" in capsys.readouterr().out
    with server.client() as client:
        assert client.get(page).status_code == 200


def test_secrets_reach_no_record_and_no_output(server, workdir, marker_secrets, capfd):
    args = launch_args(server, "training.learning_rate=2e-3", "wandb=on", "wandb.entity=team", "output=json")
    assert cli.main(args) == 0
    assert cli.main(["status"]) == 0
    assert cli.main(["runs"]) == 0
    printed = capfd.readouterr()
    files = [p for p in (workdir / "outputs").rglob("*") if p.is_file()]
    assert any(p.name == "response.json" for p in files)
    for secret in marker_secrets:
        assert secret not in printed.out + printed.err
        for path in files:
            assert secret not in path.read_text(), f"{secret} leaked into {path}"


def test_a_sweep_submits_every_valid_point_and_records_the_invalid_one(server, workdir, capsys):
    code = cli.main(
        [
            *launch_args(server, "training.learning_rate=3e-3", "backend.max_in_flight=2"),
            "-m",
            "training.lora_rank=4,8,12",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert "training.lora_rank=12: must be a power of two" in captured.err
    runs = find_runs(workdir / "outputs")
    assert len(runs) == 2 and len({run.path.parent for run in runs}) == 1
    on_server = set(server.local_job_ids())
    assert {run.job_id for run in runs} <= on_server
    assert json.loads(next((workdir / "outputs").rglob("invalid-2/error.json")).read_text())["overrides"][
        -1
    ] == ("training.lora_rank=12")


def test_relaunch_renders_a_byte_identical_request(server, workdir, capsys):
    assert cli.main(launch_args(server, "training.learning_rate=4e-3")) == 0
    (first,) = find_runs(workdir / "outputs")
    assert cli.main(["relaunch", str(first.path)]) == 0
    assert "launched before: reattached" in capsys.readouterr().out
    second = next(run for run in find_runs(workdir / "outputs") if run.path != first.path)
    assert (second.path / "request.json").read_bytes() == (first.path / "request.json").read_bytes()

    with (workdir / "rows.jsonl").open("ab") as rows:  # the dataset changed since: the request would differ
        rows.write(b'{"messages":[{"role":"user","content":"What is 1+1?"}],"ground_truth":"2"}\n')
    assert cli.main(["relaunch", str(first.path)]) == 1
    assert "the request differs from the record" in capsys.readouterr().err


def test_cancel_stops_the_job_and_records_it(server, workdir):
    assert cli.main(launch_args(server, "training.learning_rate=5e-3", "quiet=true")) == 0
    (run,) = find_runs(workdir / "outputs")
    assert cli.main(["cancel", str(run.path)]) == 0
    wait_for(
        lambda: cli.main(["status", str(run.path)]) == 0 and run.state == "JOB_STATE_CANCELLED", "the cancel"
    )
    states = [entry["state"] for entry in run.status_history()]
    assert states[-1] == "JOB_STATE_CANCELLED" and len(states) >= 2


def test_max_rows_uploads_only_the_first_rows(server, workdir):
    args = launch_args(server, "training.learning_rate=7e-3", "dataset.max_rows=5", "quiet=true")
    assert cli.main(args) == 0
    (run,) = find_runs(workdir / "outputs")
    dataset = run.read_json("meta.json")["inputs"]["dataset"]
    assert dataset["max_rows"] == 5
    with server.client() as client:
        uploaded = client.get(f"/v1/{dataset['name']}").json()
    assert int(uploaded["exampleCount"]) == 5


@pytest.mark.slow
def test_wait_follows_the_job_to_its_end_and_records_metrics(server, workdir, capsys):
    code = cli.main(launch_args(server, "training.learning_rate=6e-3", "wait=true"))
    (run,) = find_runs(workdir / "outputs")
    job = run.read_json("job.json")
    # stderr is not a terminal here: the progress comes as plain lines, one per state at least, the last one final
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"{run.job_id} ")]
    assert len(lines) >= 2 and "%" in lines[0]
    assert lines[-1].split("%", 1)[1].strip().startswith(job["state"].removeprefix("JOB_STATE_").lower())
    if job["state"] == "JOB_STATE_COMPLETED":
        assert "eval " in lines[-1]  # the whole description on the job's line, never wrapped
    assert job["state"] in TERMINAL_STATES
    assert code == (0 if job["state"] in ("JOB_STATE_COMPLETED", "JOB_STATE_EARLY_STOPPED") else 1)
    metrics = run.read_json("metrics.json")["metrics"]
    if job["state"] == "JOB_STATE_COMPLETED":
        assert metrics and {"step", "reward_mean"} <= set(metrics[-1])
    assert run.status_history()[-1]["state"] == job["state"]
    assert Path(run.path / "status.jsonl").read_text().count("\n") >= 2


def test_a_running_local_server_started_under_another_home_is_named_with_the_fix(server, tmp_path, capsys):
    """This test's HOME is not the server's, so the profile its first start wrote is not here."""
    row = {"messages": [{"role": "user", "content": "What is 1+2?"}], "ground_truth": "3"}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n")
    assert cli.main([*launch_args(server), f"dataset.path={tmp_path / 'rows.jsonl'}"]) != 0
    printed = capsys.readouterr()
    message = printed.out + printed.err
    assert "holds no key" in message and "rftlab serve --stop" in message
