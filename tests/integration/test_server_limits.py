"""Hostile and oversized input against a real `rftlab serve` started with small limits: every one is answered with
a 4xx that says what is wrong (and which flag sets the limit), nothing is left on disk, and the server keeps
answering on the same connection."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import tarfile
import time

import httpx
import pytest
import sqlalchemy
from server_harness import (
    LocalServer,
    arithmetic_jsonl,
    create_evaluator,
    fresh_postgres_database,
    small_job,
    upload_dataset,
)

A = "/v1/accounts/local"
KB = 1024
LIMITS = {
    "--max-request-mb": "0.05",
    "--max-inline-code-mb": "0.1",
    "--max-upload-mb": "0.2",
    "--max-upload-url-mb": "0.5",
    "--max-row-kb": "16",
    "--max-rows": "40",
    "--max-queued-jobs-per-account": "2",
}
WANDB_KEY = "wandb-key-SEALED-5e1d"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    flags = [part for pair in LIMITS.items() for part in pair]
    with contextlib.ExitStack() as stack:
        database_url = (
            stack.enter_context(fresh_postgres_database()) if request.param == "postgresql" else None
        )
        root = tmp_path_factory.mktemp("limits")
        yield stack.enter_context(
            LocalServer.under(root, max_running_jobs=0, extra_args=flags, database_url=database_url)
        )


def error_of(response: httpx.Response, code: int) -> str:
    assert response.status_code == code, response.text
    assert response.headers["x-request-id"]
    return response.json()["error"]["message"]


def new_dataset(client: httpx.Client, dataset_id: str) -> None:
    response = client.post(f"{A}/datasets", json={"datasetId": dataset_id, "dataset": {}})
    assert response.status_code == 200, response.text


def leftovers(server: LocalServer) -> list[str]:
    uploads = server.state_dir / "uploads"
    return sorted(p.name for p in uploads.iterdir()) if uploads.is_dir() else []


def test_the_schema_is_served(client):
    schema = client.get("/openapi.json").json()
    assert f"{A.replace('local', '{account_id}')}/datasets" in schema["paths"]


def test_a_json_body_over_the_limit_is_413_declared_or_streamed(client):
    big = {"datasetId": "big", "dataset": {"displayName": "x" * 60 * KB}}
    assert "--max-request-mb" in error_of(client.post(f"{A}/datasets", json=big), 413)

    def chunks():
        payload = json.dumps(big).encode()
        for start in range(0, len(payload), 8 * KB):
            yield payload[start : start + 8 * KB]

    streamed = client.post(f"{A}/datasets", content=chunks(), headers={"content-type": "application/json"})
    assert "--max-request-mb" in error_of(streamed, 413)
    assert client.get("/healthz").status_code == 200  # the same connection still works


def test_names_and_display_names_are_bounded(client):
    long_name = {"datasetId": "named", "dataset": {"displayName": "n" * 300}}
    assert "displayName" in error_of(client.post(f"{A}/datasets", json=long_name), 400)
    nul_name = {"datasetId": "named", "dataset": {"displayName": "a\0b"}}
    assert "control characters" in error_of(client.post(f"{A}/datasets", json=nul_name), 400)
    long_id = {"datasetId": "d" * 64, "dataset": {}}
    assert "datasetId" in error_of(client.post(f"{A}/datasets", json=long_id), 400)


def test_inline_evaluator_code_over_the_limit_is_413(client):
    code = "def evaluate(messages, **kw):\n    return 1.0\n" + "# padding\n" * 12_000
    body = {
        "evaluatorId": "huge",
        "evaluator": {
            "criteria": [
                {
                    "type": "CODE_SNIPPETS",
                    "codeSnippets": {"fileContents": {"main.py": code}, "entryFile": "main.py"},
                }
            ]
        },
    }
    message = error_of(client.post(f"{A}/evaluatorsV2", json=body), 413)
    assert "--max-inline-code-mb" in message and ".tar.gz" in message


def test_a_multipart_upload_over_the_limit_is_413_and_leaves_nothing(client, server):
    new_dataset(client, "too-big")
    content = b'{"messages": [{"role": "user", "content": "' + b"x" * KB + b'"}]}\n'
    content *= 300  # about 300 KB, over the limit (200 KB and the multipart framing's allowance)
    response = client.post(f"{A}/datasets/too-big:upload", files={"file": ("rows.jsonl", content)})
    assert "--max-upload-mb" in error_of(response, 413)
    assert not [name for name in leftovers(server) if name.endswith(".multipart")]


def test_a_nul_byte_in_a_file_name_is_400(client):
    new_dataset(client, "nul-name")
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a\0b.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        + arithmetic_jsonl(2)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = client.post(f"{A}/datasets/nul-name:upload", content=body, headers=headers)
    assert "plain file name" in error_of(response, 400)
    endpoint = client.post(f"{A}/datasets/nul-name:getUploadEndpoint", json={"filenameToSize": {"a\0b": 10}})
    assert "plain file name" in error_of(endpoint, 400)


@pytest.mark.parametrize("size", [2**63, 10**12, 600 * KB, -1])
def test_absurd_declared_sizes_get_no_upload_url(client, size):
    new_dataset(client, f"declared-{abs(size) % 997}")
    response = client.post(
        f"{A}/datasets/declared-{abs(size) % 997}:getUploadEndpoint",
        json={"filenameToSize": {"rows.jsonl": size}},
    )
    message = error_of(response, 400)
    assert "--max-upload-url-mb" in message or "≥ 0" in message


def test_a_put_larger_than_declared_or_abandoned_leaves_no_file(client, server):
    new_dataset(client, "put-flow")
    endpoint = client.post(
        f"{A}/datasets/put-flow:getUploadEndpoint", json={"filenameToSize": {"r.jsonl": 100}}
    )
    url = endpoint.json()["filenameToSignedUrls"]["r.jsonl"]
    assert "declared 100 bytes" in error_of(httpx.put(url, content=b"x" * 500), 400)

    path = httpx.URL(url).path
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode() + b"y" * 40)
        time.sleep(0.5)
    deadline = time.monotonic() + 10
    while any(name.endswith(".partial") for name in leftovers(server)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [name for name in leftovers(server) if name.endswith(".partial")]


def test_hostile_rows_are_refused_by_line(client):
    rows = [
        b'{"messages":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"messages": [{"role": "user", "content": "1"}], "n": ' + b"9" * 5000 + b"}",
        b'{"messages": [{"role": "user", "content": "' + b"x" * 20 * KB + b'"}]}',
        b'{"messages": [{"role": "user", "content": "fine"}]}',
    ]
    message = error_of(upload_dataset(client, "local", "hostile", b"\n".join(rows) + b"\n"), 400)
    assert "line 1: nested more than 64 levels deep" in message
    assert "line 2: holds an integer of more than 4300 digits" in message
    assert "line 3: longer than 16,384 bytes" in message and "--max-row-kb" in message
    assert "line 4" not in message


def test_too_many_rows_are_refused(client):
    message = error_of(upload_dataset(client, "local", "long", arithmetic_jsonl(41)), 400)
    assert "line 41: more than 40 rows" in message and "--max-rows" in message


@pytest.mark.parametrize("offset", [10**20, -1, "5", 1.5, [1]])
@pytest.mark.parametrize("collection", ["datasets", "evaluators", "reinforcementFineTuningJobs", "secrets"])
def test_forged_page_tokens_are_400(client, offset, collection):
    token = base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()
    response = client.get(f"{A}/{collection}", params={"pageToken": token})
    assert "pageToken" in error_of(response, 400)


def test_malformed_json_bodies_are_400(client):
    for body in (b'{"datasetId": ', b"[" * 20_000, b'{"datasetId": ' + b"9" * 5000 + b"}"):
        response = client.post(f"{A}/datasets", content=body, headers={"content-type": "application/json"})
        error_of(response, 400)


def test_a_tar_holding_its_own_folder_name_is_no_5xx(client):
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in ("pkg/", "pkg/pkg/"):
            folder = tarfile.TarInfo(name)
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
        code = b"def evaluate(messages, **kw):\n    return 1.0\n"
        entry = tarfile.TarInfo("pkg/main.py")
        entry.size = len(code)
        tar.addfile(entry, io.BytesIO(code))
    body = {"evaluatorId": "nested-pkg", "evaluator": {"entryPoint": "main.py::evaluate"}}
    assert client.post(f"{A}/evaluatorsV2", json=body).status_code == 200
    size = len(archive.getvalue())
    endpoint = client.post(
        f"{A}/evaluators/nested-pkg:getUploadEndpoint", json={"filenameToSize": {"code.tar.gz": size}}
    )
    assert httpx.put(
        endpoint.json()["filenameToSignedUrls"]["code.tar.gz"], content=archive.getvalue()
    ).is_success
    response = client.post(f"{A}/evaluators/nested-pkg:validateUpload")
    assert response.status_code < 500, response.text


@pytest.fixture(scope="module")
def ready(client):
    assert upload_dataset(client, "local", "rows", arithmetic_jsonl(16)).status_code == 200
    create_evaluator(client, "local", "exact")


def test_an_account_may_queue_only_so_many_jobs(client, ready):
    body = small_job("accounts/local/datasets/rows", "accounts/local/evaluators/exact")
    jobs = f"{A}/reinforcementFineTuningJobs"
    for job_id in ("quota-1", "quota-2"):
        assert (
            client.post(jobs, params={"reinforcementFineTuningJobId": job_id}, json=body).status_code == 200
        )
    refused = client.post(jobs, params={"reinforcementFineTuningJobId": "quota-3"}, json=body)
    assert refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "--max-queued-jobs-per-account" in error_of(refused, 429)
    assert client.post(f"{jobs}/quota-1:cancel").status_code == 200
    assert client.post(jobs, params={"reinforcementFineTuningJobId": "quota-3"}, json=body).status_code == 200
    for job_id in ("quota-2", "quota-3"):
        client.post(f"{jobs}/{job_id}:cancel")


def test_a_jobs_wandb_key_is_stored_sealed(client, server, ready):
    body = small_job(
        "accounts/local/datasets/rows",
        "accounts/local/evaluators/exact",
        wandbConfig={"enabled": True, "apiKey": WANDB_KEY, "project": "p"},
    )
    jobs = f"{A}/reinforcementFineTuningJobs"
    created = client.post(jobs, params={"reinforcementFineTuningJobId": "sealed"}, json=body)
    assert created.status_code == 200, created.text
    client.post(f"{jobs}/sealed:cancel")
    url = server.database_url or f"sqlite:///{server.state_dir / 'rftlab.db'}"
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as db:
        stored = db.execute(
            sqlalchemy.text("SELECT secrets FROM rft_jobs WHERE job_id = 'sealed'")
        ).scalar_one()
        every_job = " ".join(str(row) for row in db.execute(sqlalchemy.text("SELECT * FROM rft_jobs")))
    engine.dispose()
    assert set(json.loads(stored) if isinstance(stored, str) else stored) == {"sealed"}
    assert WANDB_KEY not in every_job
