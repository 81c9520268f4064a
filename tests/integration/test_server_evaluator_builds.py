"""Evaluator builds on a real `rftlab serve`: requirements.txt checked line by line, the build log behind
`:getBuildLogEndpoint`, archives capped before unpacking, builds off the request path, and (slow) environments
installed from requirements.txt and shared by evaluators with the same requirements."""

from __future__ import annotations

import io
import tarfile
import time

import httpx
import pytest
from server_harness import wait_for

A = "/v1/accounts/local"
SCORE_PY = "def evaluate(messages, ground_truth=None, **kw):\n    return 1.0\n"


def tar_gz(files: dict[str, str | bytes], folder: str = "my_eval") -> bytes:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()


def upload(client: httpx.Client, evaluator_id: str, archive: bytes, entry_point: str = "score.py::evaluate"):
    """The V2 flow as ep runs it; returns the :validateUpload answer."""
    created = client.post(
        f"{A}/evaluatorsV2", json={"evaluatorId": evaluator_id, "evaluator": {"entryPoint": entry_point}}
    )
    assert created.status_code == 200, created.text
    name = f"{evaluator_id}.tar.gz"
    endpoint = client.post(
        f"{A}/evaluators/{evaluator_id}:getUploadEndpoint", json={"filenameToSize": {name: str(len(archive))}}
    )
    url = endpoint.json()["filenameToSignedUrls"][name]
    headers = {"X-Goog-Content-Length-Range": f"{len(archive)},{len(archive)}"}
    assert httpx.put(url, content=archive, headers=headers).status_code == 200
    validated = client.post(f"{A}/evaluators/{evaluator_id}:validateUpload", json={})
    assert validated.status_code == 200, validated.text
    return validated.json()


def settled(client: httpx.Client, evaluator_id: str, timeout_s: float = 60) -> dict:
    def done():
        evaluator = client.get(f"{A}/evaluators/{evaluator_id}").json()
        return evaluator if evaluator["state"] != "BUILDING" else None

    return wait_for(done, f"{evaluator_id} to finish building", timeout_s=timeout_s)


def build_log(client: httpx.Client, evaluator_id: str) -> str:
    endpoint = client.get(f"{A}/evaluators/{evaluator_id}:getBuildLogEndpoint")
    assert endpoint.status_code == 200, endpoint.text
    response = httpx.get(endpoint.json()["buildLogSignedUri"])  # no Authorization: the URL is the credential
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("-e .", "requirements.txt line 2: '-e .': editable installs (-e) point at a local folder"),
        ("--index-url https://example.com/simple", "pip options are not supported"),
        ("pkg @ file:///etc/passwd", "local paths cannot be installed"),
        ("not a requirement!", "requirements.txt line 2: 'not a requirement!' is not a package requirement"),
    ],
)
def test_requirements_lines_that_are_not_plain_requirements_fail_the_build_naming_the_line(
    client, line, complaint
):
    evaluator_id = f"bad-req-{len(line)}"
    archive = tar_gz({"score.py": SCORE_PY, "requirements.txt": f"# pinned\n{line}\n"})
    evaluator = settled(client, upload(client, evaluator_id, archive)["name"].rsplit("/", 1)[1])
    assert evaluator["state"] == "BUILD_FAILED"
    assert complaint in evaluator["status"]["message"]
    assert complaint in build_log(client, evaluator_id)


def test_the_build_log_tells_what_the_build_did_and_its_url_is_signed(client):
    evaluator = upload(client, "logged", tar_gz({"score.py": SCORE_PY, "requirements.txt": ""}))
    assert evaluator["state"] == "ACTIVE", evaluator
    log = build_log(client, "logged")
    assert "importing score.py and looking up evaluate" in log
    assert "ACTIVE: entry point score.py::evaluate" in log
    assert httpx.get(f"{client.base_url}/v1/evaluatorBuildLogs/not-a-token").status_code == 404


def test_an_archive_that_unpacks_too_many_files_is_refused_before_unpacking(client, server):
    archive = tar_gz({"score.py": SCORE_PY, **{f"f{i}.txt": "" for i in range(20_001)}})
    evaluator = settled(client, upload(client, "bomb", archive)["name"].rsplit("/", 1)[1])
    assert evaluator["state"] == "BUILD_FAILED"
    assert "unpacks to more than 20000 files" in evaluator["status"]["message"]
    assert not list((server.state_dir / "accounts/local/evaluators/bomb/code").glob("f*.txt"))


@pytest.mark.slow
def test_a_slow_build_answers_building_and_finishes_in_the_background(client):
    slow = "import time\ntime.sleep(15)\n" + SCORE_PY
    started = time.monotonic()
    answered = upload(client, "slow-import", tar_gz({"score.py": slow}))
    assert answered["state"] == "BUILDING"
    assert time.monotonic() - started < 14
    assert settled(client, "slow-import")["state"] == "ACTIVE"


@pytest.mark.slow
def test_requirements_install_into_an_environment_that_the_next_evaluator_reuses(client, server):
    """A wheel-only package from the index; the second evaluator with the same requirements skips the install."""
    uses_package = (
        "import tomli_w\n\ndef evaluate(messages, **kw):\n    return float(bool(tomli_w.dumps({})) or 1)\n"
    )
    files = {"score.py": uses_package, "requirements.txt": "tomli-w\n"}
    first = settled(client, upload(client, "needs-pkg", tar_gz(files))["name"].rsplit("/", 1)[1], 600)
    if "installing requirements.txt failed" in first["status"]["message"]:
        pytest.skip(f"no package index reachable: {first['status']['message'][-300:]}")
    assert first["state"] == "ACTIVE", first["status"]
    assert "creating environment" in build_log(client, "needs-pkg")

    started = time.monotonic()
    second = settled(client, upload(client, "needs-pkg-too", tar_gz(files))["name"].rsplit("/", 1)[1])
    elapsed = time.monotonic() - started
    assert second["state"] == "ACTIVE", second["status"]
    assert "is ready (shared with evaluators of the same requirements)" in build_log(client, "needs-pkg-too")
    assert elapsed < 10, f"the second build took {elapsed:.1f} s"
    envs = list((server.state_dir / "evaluator-envs").iterdir())
    assert len(envs) == 1, envs
