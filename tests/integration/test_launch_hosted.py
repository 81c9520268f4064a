"""`rftlab launch backend=fireworks` end to end against a local `rftlab serve` standing in for the hosted service,
with a recording proxy between them: the uploads go as Fireworks takes them (the dataset created as
`userUploaded` with its example count; the evaluator's folder as a tar.gz with a generated @evaluation_test and
requirements.txt, through evaluatorsV2, :getUploadEndpoint, an unauthenticated PUT and :validateUpload), the
job trains to COMPLETED, and a second launch reuses both uploads.

Slow: the server installs the evaluator's requirements (eval-protocol) with uv; skipped without a package index.
"""

from __future__ import annotations

import json

import pytest
from server_harness import LocalServer, project_folder
from wire_recorder import WireRecorder

from rftlab import cli
from rftlab.runs.records import find_runs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    uv_cache = tmp_path_factory.mktemp("uv-cache")
    with LocalServer.under(
        tmp_path_factory.mktemp("hosted"), extra_env={"UV_CACHE_DIR": str(uv_cache)}
    ) as running:
        yield running


def test_a_fireworks_launch_uploads_as_fireworks_takes_it_and_trains(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIREWORKS_API_KEY", server.local_key())
    with project_folder(server, tmp_path, monkeypatch, rows=16), WireRecorder(server.base_url) as wire:
        args = [
            "launch",
            "backend=fireworks",
            f"backend.base_url={wire.base_url}",
            "backend.account_id=local",
            "backend.poll_interval_s=1",
            "wait=true",
            "dataset.path=rows.jsonl",
            "training.epochs=1",
            "training.learning_rate=0.0005",
            "training.chunk_size=8",
            "sampling.response_candidates_count=4",
            "sampling.max_output_tokens=8",
        ]
        status = cli.main(args)
        output = capsys.readouterr()
        if status != 0 and "installing requirements.txt failed" in output.err:
            pytest.skip(f"the server could not install eval-protocol: {output.err[-500:]}")
        assert status == 0, output.err[-3000:]

        created = [e for e in wire.find("POST", "/datasets") if e.path.endswith("/datasets")]
        assert len(created) == 1
        assert created[0].body["dataset"]["userUploaded"] == {}
        assert created[0].body["dataset"]["exampleCount"] == "16"
        assert created[0].body["dataset"]["format"] == "FORMAT_UNSPECIFIED"

        evaluator = wire.find("POST", "/evaluatorsV2")[0].body["evaluator"]
        assert evaluator["entryPoint"] == "test_rftlab_entry.py::test_rftlab_entry"
        assert "criteria" not in evaluator
        endpoint = [e for e in wire.find("POST", ":getUploadEndpoint") if "/evaluators/" in e.path]
        assert len(endpoint) == 1
        assert list(endpoint[0].body["filenameToSize"]) == ["arithmetic.tar.gz"]
        puts = wire.find("PUT", "/v1/uploads/")
        assert len(puts) == 1 and not puts[0].authorized and puts[0].status == 200
        assert [e.status for e in wire.find("POST", ":validateUpload")] == [200]

        (run,) = find_runs(tmp_path / "outputs")
        job = run.read_json("job.json")
        assert job["state"] == "JOB_STATE_COMPLETED", job.get("status")

        before = len(wire.exchanges)
        assert cli.main(args) == 0
        again = wire.exchanges[before:]
        assert not [
            e for e in again if e.method in ("PUT",) or "evaluatorsV2" in e.path or ":upload" in e.path
        ]
        print(json.dumps({"requests": len(wire.exchanges)}))
