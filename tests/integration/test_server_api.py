"""The REST surface of a real `rftlab serve` on 127.0.0.1: auth, datasets, evaluators, jobs (queued, not trained:
the server runs with --max-running-jobs 0), paging and error paths."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile

import httpx
import pytest
from server_harness import (
    arithmetic_jsonl,
    create_evaluator,
    job_state,
    small_job,
    upload_dataset,
)

from rftlab.fireworks.contract import CANCELLED, PENDING

A = "/v1/accounts/local"


@pytest.fixture(scope="module")
def ready(client):
    """A READY dataset and an ACTIVE evaluator for job tests."""
    assert upload_dataset(client, "local", "rows", arithmetic_jsonl(16)).status_code == 200
    create_evaluator(client, "local", "exact")
    return "accounts/local/datasets/rows", "accounts/local/evaluators/exact"


@pytest.fixture(scope="module")
def not_ready(client):
    """A dataset still UPLOADING and an evaluator that failed to build."""
    client.post(f"{A}/datasets", json={"datasetId": "waiting", "dataset": {}})
    create_evaluator(client, "local", "wont-build", code="raise RuntimeError('boom')\n")


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


def test_first_start_writes_the_local_profile_and_keeps_only_a_hash(server):
    auth_ini = (server.home / ".fireworks/profiles/rftlab-local/auth.ini").read_text()
    key = server.local_key()
    assert "account_id = local" in auth_ini
    assert (server.home / ".fireworks/profiles/rftlab-local/auth.ini").stat().st_mode & 0o077 == 0
    database = sqlite3.connect(server.state_dir / "rftlab.db")
    stored = [row[0] for row in database.execute("select key_hash from api_keys")]
    assert stored and key not in stored
    assert key.encode() not in (server.state_dir / "rftlab.db").read_bytes()


def test_healthz_is_open_and_everything_else_needs_a_key(server):
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
    missing = httpx.get(f"{server.base_url}{A}/datasets")
    assert missing.status_code == 401
    assert error_of(missing) == {
        "code": 401,
        "message": "missing 'Authorization: Bearer <API key>' header",
        "status": "UNAUTHENTICATED",
    }
    wrong = httpx.get(f"{server.base_url}{A}/datasets", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_verify_api_key_names_the_keys_account(server):
    answer = httpx.get(
        f"{server.base_url}/verifyApiKey", headers={"Authorization": f"Bearer {server.local_key()}"}
    )
    assert answer.status_code == 200 and answer.headers["x-fireworks-account-id"] == "local"
    assert httpx.get(f"{server.base_url}/verifyApiKey").status_code == 401


def test_dataset_upload_validates_rows_and_counts_examples(client):
    created = client.post(
        f"{A}/datasets", json={"datasetId": "arith", "dataset": {"displayName": "Arithmetic"}}
    )
    assert created.json()["state"] == "UPLOADING"
    uploaded = client.post(f"{A}/datasets/arith:upload", files={"file": ("a.jsonl", arithmetic_jsonl(30))})
    assert uploaded.status_code == 200, uploaded.text
    dataset = client.get(f"{A}/datasets/arith").json()
    assert (dataset["state"], dataset["exampleCount"], dataset["displayName"]) == (
        "READY",
        "30",
        "Arithmetic",
    )
    again = client.post(f"{A}/datasets/arith:upload", files={"file": ("a.jsonl", arithmetic_jsonl(2))})
    assert again.status_code == 400 and error_of(again)["status"] == "FAILED_PRECONDITION"


def test_bad_rows_are_refused_with_their_line_numbers(client):
    good = json.dumps({"messages": [{"role": "user", "content": "1+1?"}], "ground_truth": "2"})
    lines = [
        good,
        "{not json",
        json.dumps({"prompt": "no messages"}),
        json.dumps({"messages": [{"role": "robot", "content": "hi"}]}),
        good,
    ]
    created = client.post(f"{A}/datasets", json={"datasetId": "broken", "dataset": {}})
    assert created.status_code == 200
    response = client.post(
        f"{A}/datasets/broken:upload", files={"file": ("b.jsonl", "\n".join(lines).encode())}
    )
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert "3 invalid line(s)" in message
    assert "line 2: invalid JSON" in message
    assert "line 3: missing required field 'messages'" in message
    assert "line 4: messages[0].role is 'robot'" in message
    dataset = client.get(f"{A}/datasets/broken").json()
    assert dataset["state"] == "UPLOADING" and "line 2" in dataset["status"]["message"]


def test_large_file_flow_through_an_upload_url(client, server):
    content = arithmetic_jsonl(50)
    client.post(f"{A}/datasets", json={"datasetId": "big", "dataset": {}})
    endpoint = client.post(
        f"{A}/datasets/big:getUploadEndpoint", json={"filenameToSize": {"big.jsonl": str(len(content))}}
    )
    url = endpoint.json()["filenameToSignedUrls"]["big.jsonl"]
    assert url.startswith(server.base_url)
    short = httpx.put(url, content=content[:10], headers={"Content-Type": "application/octet-stream"})
    assert short.status_code == 400 and "declared" in error_of(short)["message"]
    endpoint = client.post(
        f"{A}/datasets/big:getUploadEndpoint", json={"filenameToSize": {"big.jsonl": str(len(content))}}
    )
    url = endpoint.json()["filenameToSignedUrls"]["big.jsonl"]
    assert (
        httpx.put(url, content=content, headers={"Content-Type": "application/octet-stream"}).status_code
        == 200
    )
    validated = client.post(f"{A}/datasets/big:validateUpload", json={})
    assert validated.status_code == 200, validated.text
    assert (validated.json()["state"], validated.json()["exampleCount"]) == ("READY", "50")


def test_validate_without_an_upload_says_what_to_do(client):
    client.post(f"{A}/datasets", json={"datasetId": "empty", "dataset": {}})
    response = client.post(f"{A}/datasets/empty:validateUpload", json={})
    assert response.status_code == 400 and ":getUploadEndpoint" in error_of(response)["message"]


def test_dataset_delete_and_404(client):
    upload_dataset(client, "local", "gone", arithmetic_jsonl(3))
    assert client.delete(f"{A}/datasets/gone").status_code == 200
    missing = client.get(f"{A}/datasets/gone")
    assert missing.status_code == 404
    assert error_of(missing) == {
        "code": 404,
        "message": "accounts/local/datasets/gone not found",
        "status": "NOT_FOUND",
    }


def test_evaluator_inline_code_becomes_active(client):
    evaluator = create_evaluator(client, "local", "inline")
    assert evaluator["state"] == "ACTIVE"
    assert evaluator["entryPoint"] == "exact_match.py::evaluate"
    assert client.get(f"{A}/evaluators/inline").json()["state"] == "ACTIVE"


def test_evaluator_import_error_is_build_failed_with_the_error(client):
    evaluator = create_evaluator(client, "local", "broken-import", code="import not_a_real_module\n")
    assert evaluator["state"] == "BUILD_FAILED"
    assert "No module named 'not_a_real_module'" in evaluator["status"]["message"]
    missing_func = create_evaluator(client, "local", "no-func", code="def other(messages):\n    return 1.0\n")
    assert missing_func["state"] == "BUILD_FAILED"
    assert "no function 'evaluate'" in missing_func["status"]["message"]


def test_legacy_evaluators_route_defaults_to_main_py_evaluate(client):
    code = "def evaluate(messages, ground_truth=None, **kwargs):\n    return 1.0\n"
    body = {
        "evaluatorId": "legacy",
        "evaluator": {"criteria": [{"codeSnippets": {"fileContents": {"main.py": code}}}]},
    }
    evaluator = client.post(f"{A}/evaluators", json=body).json()
    assert (evaluator["state"], evaluator["entryPoint"]) == ("ACTIVE", "main.py::evaluate")


def _upload_evaluator(
    client: httpx.Client, evaluator_id: str, filename: str, content: bytes, entry_point=None
):
    body = {"evaluatorId": evaluator_id, "evaluator": {"entryPoint": entry_point} if entry_point else {}}
    created = client.post(f"{A}/evaluatorsV2", json=body).json()
    assert created["state"] == "BUILDING"
    endpoint = client.post(
        f"{A}/evaluators/{evaluator_id}:getUploadEndpoint",
        json={"filenameToSize": {filename: str(len(content))}},
    )
    put = httpx.put(endpoint.json()["filenameToSignedUrls"][filename], content=content)
    assert put.status_code == 200
    return client.post(f"{A}/evaluators/{evaluator_id}:validateUpload", json={}).json()


def test_evaluator_uploaded_as_a_py_file(client):
    evaluator = _upload_evaluator(
        client, "py-upload", "score.py", b"def evaluate(messages, **kw):\n    return 0.5\n"
    )
    assert (evaluator["state"], evaluator["entryPoint"]) == ("ACTIVE", "score.py::evaluate")


def test_evaluator_uploaded_as_a_tar_gz_folder(client):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, text in {
            "my_eval/helpers.py": "def judge(text):\n    return float(text == '2')\n",
            "my_eval/reward.py": "from helpers import judge\n\ndef score(messages, **kw):\n"
            "    return judge(messages[-1]['content'])\n",
            "my_eval/requirements.txt": "",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    evaluator = _upload_evaluator(
        client, "tar-upload", "my_eval.tar.gz", archive.getvalue(), "reward.py::score"
    )
    assert (evaluator["state"], evaluator["entryPoint"]) == ("ACTIVE", "reward.py::score"), evaluator


def test_job_defaults_are_applied_and_echoed(client, ready):
    dataset, evaluator = ready
    body = {"dataset": dataset, "evaluator": evaluator, "trainingConfig": {"baseModel": "tiny-arith"}}
    created = client.post(
        f"{A}/reinforcementFineTuningJobs", params={"reinforcementFineTuningJobId": "defaults"}, json=body
    )
    assert created.status_code == 200, created.text
    job = job_state(client, "local", "defaults")
    assert job["name"] == "accounts/local/reinforcementFineTuningJobs/defaults"
    assert job["state"] == "JOB_STATE_PENDING"
    assert job["trainingConfig"] == {
        "baseModel": "tiny-arith",
        "learningRate": 0.0001,
        "maxContextLength": 8192,
        "loraRank": 8,
        "epochs": 1,
        "batchSize": 32768,
        "batchSizeSamples": 0,
        "gradientAccumulationSteps": 1,
        "learningRateWarmupSteps": 0,
        "optimizerWeightDecay": 0.01,
        "outputModel": "accounts/local/models/defaults",
    }
    assert job["inferenceParameters"] == {
        "maxOutputTokens": 2048,
        "temperature": 0.7,
        "topP": 1.0,
        "topK": 40,
        "responseCandidatesCount": 8,
    }
    assert job["lossConfig"] == {"method": "GRPO", "klBeta": 0.001}
    assert job["chunkSize"] == 200


def test_legacy_aliases_and_short_names_are_accepted(client, ready):
    body = {
        "dataset": "rows",
        "evaluator": "exact",
        "trainingConfig": {"baseModel": "tiny-arith"},
        "inferenceParameters": {"maxTokens": 64, "n": 4, "extraBody": {"stop": ["\n"]}},
        "lossConfig": {"method": "dapo"},
        "wandbConfig": {"enabled": True, "project": "p", "entity": "e", "apiKey": "wandb-secret-value"},
    }
    response = client.post(
        f"{A}/reinforcementFineTuningJobs", params={"reinforcementFineTuningJobId": "aliases"}, json=body
    )
    assert response.status_code == 200, response.text
    job = job_state(client, "local", "aliases")
    assert job["inferenceParameters"]["maxOutputTokens"] == 64
    assert job["inferenceParameters"]["responseCandidatesCount"] == 4
    assert "maxTokens" not in job["inferenceParameters"] and "n" not in job["inferenceParameters"]
    assert json.loads(job["inferenceParameters"]["extraBody"]) == {"stop": ["\n"]}
    assert job["lossConfig"] == {"method": "DAPO", "klBeta": 0.0}
    assert (job["dataset"], job["evaluator"]) == (
        "accounts/local/datasets/rows",
        "accounts/local/evaluators/exact",
    )
    assert "wandb-secret-value" not in response.text
    assert "wandb-secret-value" not in client.get(f"{A}/reinforcementFineTuningJobs").text
    assert job["wandbConfig"] == {"enabled": True, "project": "p", "entity": "e"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"trainingConfig": {"baseModel": "tiny-arith", "loraRank": 12}}, "trainingConfig.loraRank"),
        ({"trainingConfig": {"baseModel": "tiny-arith", "epochs": 0}}, "trainingConfig.epochs"),
        ({"trainingConfig": {}}, "trainingConfig: set exactly one of"),
        ({"trainingConfig": {"baseModel": "tiny-arith", "learningRate": -1}}, "trainingConfig.learningRate"),
        (
            {"inferenceParameters": {"responseCandidatesCount": 1}},
            "inferenceParameters.responseCandidatesCount",
        ),
        ({"inferenceParameters": {"temperature": 0}}, "inferenceParameters.temperature"),
        ({"inferenceParameters": {"topP": 1.5}}, "inferenceParameters.topP"),
        (
            {"inferenceParameters": {"n": 4, "responseCandidatesCount": 8}},
            "n (legacy) and responseCandidatesCount",
        ),
        ({"inferenceParameters": {"extraBody": "[1]"}}, "inferenceParameters.extraBody"),
        ({"lossConfig": {"method": "dapo", "klBeta": 0.1}}, "klBeta must be 0/unset when method is DAPO"),
        ({"lossConfig": {"method": "ppo"}}, "lossConfig.method"),
        ({"chunkSize": 20000}, "chunkSize"),
        ({"evalPasses": ["sampled", "beam"]}, "evalPasses: unknown pass 'beam': must be a non-empty list of"),
        ({"evalPasses": []}, "evalPasses: must be a non-empty list of sampled and/or greedy"),
        (
            {"trainingConfig": {"baseModel": "tiny-arith", "lorRank": 8}},
            "trainingConfig.lorRank: unknown field",
        ),
        (
            {"dataset": "accounts/local/datasets/missing"},
            "dataset: accounts/local/datasets/missing not found",
        ),
        (
            {"dataset": "accounts/local/datasets/waiting"},
            "dataset: accounts/local/datasets/waiting is UPLOADING",
        ),
        ({"evaluator": "wont-build"}, "evaluator: accounts/local/evaluators/wont-build is BUILD_FAILED"),
        ({"dataset": "accounts/other/datasets/rows"}, "dataset: accounts/other/datasets/rows not found"),
    ],
)
def test_invalid_job_requests_name_the_field(client, ready, not_ready, change, named):
    body = {
        "dataset": ready[0],
        "evaluator": ready[1],
        "trainingConfig": {"baseModel": "tiny-arith"},
        **change,
    }
    response = client.post(f"{A}/reinforcementFineTuningJobs", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert named in error["message"]


def test_a_taken_job_id_is_409(client, ready):
    body = small_job(*ready)
    params = {"reinforcementFineTuningJobId": "twice"}
    assert client.post(f"{A}/reinforcementFineTuningJobs", params=params, json=body).status_code == 200
    again = client.post(f"{A}/reinforcementFineTuningJobs", params=params, json=body)
    assert again.status_code == 409
    assert error_of(again) == {
        "code": 409,
        "message": "accounts/local/reinforcementFineTuningJobs/twice already exists",
        "status": "ALREADY_EXISTS",
    }
    bad_id = client.post(
        f"{A}/reinforcementFineTuningJobs", params={"reinforcementFineTuningJobId": "Bad_Id"}, json=body
    )
    assert bad_id.status_code == 400 and "reinforcementFineTuningJobId" in error_of(bad_id)["message"]


def test_paging_visits_every_job_once_in_the_asked_order(client, ready):
    for index in range(7):
        response = client.post(
            f"{A}/reinforcementFineTuningJobs",
            params={"reinforcementFineTuningJobId": f"page-{index}"},
            json=small_job(*ready, displayName=f"page {index}"),
        )
        assert response.status_code == 200
    seen, token = [], None
    while True:
        params = {"pageSize": 3, "orderBy": "createTime desc"} | ({"pageToken": token} if token else {})
        page = client.get(f"{A}/reinforcementFineTuningJobs", params=params).json()
        assert len(page["reinforcementFineTuningJobs"]) <= 3
        seen += [job["name"].rsplit("/", 1)[1] for job in page["reinforcementFineTuningJobs"]]
        token = page.get("nextPageToken")
        if not token:
            break
    paged = [name for name in seen if name.startswith("page-")]
    assert paged == [f"page-{i}" for i in reversed(range(7))]
    assert len(seen) == len(set(seen))
    by_name = client.get(f"{A}/reinforcementFineTuningJobs", params={"pageSize": 500}).json()
    names = [job["name"] for job in by_name["reinforcementFineTuningJobs"]]
    assert names == sorted(names) and by_name["nextPageToken"] == ""
    bad_order = client.get(f"{A}/reinforcementFineTuningJobs", params={"orderBy": "color"})
    assert bad_order.status_code == 400 and "orderBy" in error_of(bad_order)["message"]
    bad_token = client.get(f"{A}/reinforcementFineTuningJobs", params={"pageToken": "garbage"})
    assert bad_token.status_code == 400 and "pageToken" in error_of(bad_token)["message"]


def test_cancel_resume_and_delete_of_a_queued_job(client, ready):
    params = {"reinforcementFineTuningJobId": "queued"}
    assert (
        client.post(f"{A}/reinforcementFineTuningJobs", params=params, json=small_job(*ready)).status_code
        == 200
    )
    cancelled = client.post(f"{A}/reinforcementFineTuningJobs/queued:cancel", json={}).json()
    assert cancelled["state"] == "JOB_STATE_CANCELLED" and "completedTime" in cancelled
    again = client.post(f"{A}/reinforcementFineTuningJobs/queued:cancel", json={})
    assert again.status_code == 400 and error_of(again)["status"] == "FAILED_PRECONDITION"
    resumed = client.post(f"{A}/reinforcementFineTuningJobs/queued:resume", json={}).json()
    assert resumed["state"] == "JOB_STATE_PENDING"
    not_resumable = client.post(f"{A}/reinforcementFineTuningJobs/queued:resume", json={})
    assert (
        not_resumable.status_code == 400 and "only FAILED or CANCELLED" in error_of(not_resumable)["message"]
    )
    history = client.get(f"{A}/reinforcementFineTuningJobs/queued/stateHistory").json()["stateHistory"]
    assert [(entry["state"], entry["message"]) for entry in history] == [
        (PENDING, "queued"),
        (CANCELLED, "cancelled before it started"),
        (PENDING, "resumed: queued to continue from its last checkpoint"),
    ]
    assert [entry["time"] for entry in history] == [
        resumed["createTime"],
        cancelled["completedTime"],
        resumed["updateTime"],
    ]
    in_use = client.delete(f"{A}/datasets/rows")
    assert in_use.status_code == 400 and "queued" in error_of(in_use)["message"]
    assert client.delete(f"{A}/reinforcementFineTuningJobs/queued").status_code == 200
    assert client.get(f"{A}/reinforcementFineTuningJobs/queued").status_code == 404
    assert client.get(f"{A}/reinforcementFineTuningJobs/queued/metrics").status_code == 404
    assert client.get(f"{A}/reinforcementFineTuningJobs/queued/stateHistory").status_code == 404


def test_unknown_routes_answer_in_the_same_error_shape(client):
    response = client.get("/v1/accounts/local/nothingHere")
    assert response.status_code == 501 and error_of(response)["status"] == "UNIMPLEMENTED"
    assert "GET /v1/accounts/local/nothingHere" in error_of(response)["message"]


def test_models_list_is_empty_before_any_job_finished(client):
    assert client.get(f"{A}/models").json() == {"models": [], "nextPageToken": ""}
    assert client.get(f"{A}/models/none").status_code == 404
