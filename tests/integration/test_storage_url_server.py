"""`rftlab serve --storage-url file://...` with the local executor: what the server validates goes to the bucket
at its state-dir key and leaves it with its resource, a server without its local copy reads it back from there,
a job's output adapter, last checkpoint and log end up in the bucket, and `rftlab chat` fetches a trained model
from it. A URL the server cannot use stops it at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from server_harness import (
    LocalServer,
    arithmetic_jsonl,
    create_job,
    finished,
    small_job,
    upload_dataset,
    wait_for,
)

from rftlab import cli
from rftlab.server import serve
from rftlab.server.storage import FOLDER_MANIFEST


@pytest.fixture(scope="module")
def server(storage_server: LocalServer) -> LocalServer:
    return storage_server


def test_validated_files_go_to_the_bucket_and_leave_it_with_their_resource(server, bucket: Path) -> None:
    assert (bucket / "accounts/local/datasets/one-chunk/data.jsonl").read_bytes() == arithmetic_jsonl(8)
    code = bucket / "accounts/local/evaluators/exact/code"
    assert (code / "exact_match.py").is_file() and (code / FOLDER_MANIFEST).is_file()
    with server.client() as client:
        assert upload_dataset(client, "local", "doomed", arithmetic_jsonl(4)).status_code == 200
        assert (bucket / "accounts/local/datasets/doomed/data.jsonl").is_file()
        assert client.delete("/v1/accounts/local/datasets/doomed").status_code == 200
    assert not (bucket / "accounts/local/datasets/doomed").exists()


def test_a_dataset_missing_from_the_state_dir_is_read_back_from_the_bucket(server) -> None:
    local = server.state_dir / "accounts/local/datasets/one-chunk/data.jsonl"
    local.unlink()  # as on a new machine that shares the database and the bucket
    with server.client() as client:
        rows = client.get("/dashboard/api/datasets/one-chunk/rows").json()["rows"]
    assert len(rows) == 8 and local.read_bytes() == arithmetic_jsonl(8)


def test_a_url_serve_cannot_use_stops_it_at_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for url, why in (("nope://bucket", "Protocol not known: nope"), ("memory://bucket", "cannot reach it")):
        assert serve.main(["--state-dir", str(tmp_path), "--storage-url", url]) == 2
        assert why in capsys.readouterr().err


@pytest.mark.slow
def test_a_jobs_files_end_up_in_the_bucket_and_chat_fetches_its_model_from_there(
    server, bucket: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with server.client() as client:
        create_job(
            client,
            "local",
            "kept",
            small_job("accounts/local/datasets/one-chunk", "accounts/local/evaluators/exact"),
        )
        job = wait_for(lambda: finished(client, "local", "kept"), "the job to finish", 300)
        model = client.get("/v1/accounts/local/models/kept").json()
    assert job["state"] == "JOB_STATE_COMPLETED", job
    assert model["adapterPath"] == f"file://{bucket}/accounts/local/models/kept"
    assert (bucket / "accounts/local/models/kept/adapter_config.json").is_file()
    (checkpoint,) = (bucket / "accounts/local/jobs/kept/checkpoints").glob("step-*")
    assert (checkpoint / "COMPLETE").is_file() and (checkpoint / FOLDER_MANIFEST).is_file()
    log = bucket / "accounts/local/jobs/kept/worker.log"
    wait_for(log.is_file, "the worker log in the bucket", 30)  # copied there once the worker ends
    assert "started on job kept" in log.read_text()

    local = server.state_dir / "accounts/local/models/kept"
    for file in local.iterdir():
        file.unlink()
    monkeypatch.setenv("RFTLAB_HOME", str(server.state_dir))
    assert cli.main(["chat", "accounts/local/models/kept", "What is 2+3?", "--max-new-tokens", "4"]) == 0
    assert (
        local / "adapter_config.json"
    ).is_file()  # fetched from the bucket: the setting is in the database
    assert capsys.readouterr().out.strip()
