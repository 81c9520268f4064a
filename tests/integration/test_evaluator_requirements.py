"""Evaluator builds on a real `rftlab serve` whose uv finds packages only in a local folder (no index, no
network): a requirement that is a wheel installs and scores, one that is only an sdist fails the build with a
status naming it and the fix, and many uploads at once build at most `MAX_PARALLEL_BUILDS` at a time, the rest
saying "queued"."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from server_harness import LocalServer, wait_for
from test_server_evaluator_builds import build_log, settled, tar_gz, upload

from package_files import make_sdist, make_wheel
from rftlab import sandbox
from rftlab.server.api_evaluators import BUILDING_MESSAGE, MAX_PARALLEL_BUILDS, QUEUED_MESSAGE

A = "/v1/accounts/local"
MISSING = sandbox.capabilities().missing()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"this host lacks {'; '.join(MISSING)}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    packages = tmp_path_factory.mktemp("packages")
    make_wheel(packages, "tiny_dep", "1.0", {"tiny_dep.py": "VALUE = 0.5\n"})
    make_sdist(packages, "only_sdist", "1.0", "RESULT = 'built'")
    env = {"UV_FIND_LINKS": str(packages), "UV_OFFLINE": "1"}
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0, extra_env=env) as running:
        yield running


def test_a_wheel_requirement_installs_and_the_evaluator_imports_it(client):
    score = "import tiny_dep\n\ndef evaluate(messages, **kw):\n    return tiny_dep.VALUE\n"
    files = {"score.py": score, "requirements.txt": "tiny-dep==1.0\n"}
    evaluator = settled(client, upload(client, "uses-wheel", tar_gz(files))["name"].rsplit("/", 1)[1], 120)
    assert evaluator["state"] == "ACTIVE", evaluator["status"]
    assert "creating environment" in build_log(client, "uses-wheel")


def test_an_sdist_only_requirement_fails_the_build_naming_it_and_the_fix(client):
    files = {
        "score.py": "def evaluate(messages, **kw):\n    return 1.0\n",
        "requirements.txt": "only-sdist\n",
    }
    evaluator = settled(client, upload(client, "needs-sdist", tar_gz(files))["name"].rsplit("/", 1)[1], 120)
    assert evaluator["state"] == "BUILD_FAILED"
    message = evaluator["status"]["message"]
    assert "only-sdist: no wheel for Python" in message, message
    assert "rftlab serve --evaluator-sdists" in message


def build_checks_running(state_dir: Path) -> set[str]:
    """The evaluators whose import check is running now: every process of one names its code folder."""
    building = set()
    evaluators = f"{state_dir}/accounts/local/evaluators/"
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for arg in argv:
            if arg.startswith(evaluators) and arg.endswith("/code"):
                building.add(arg[len(evaluators) :].split("/")[0])
    return building


def test_many_uploads_at_once_build_at_most_the_bound_at_a_time_the_rest_queued(client, server):
    slow = "import time\ntime.sleep(2)\n\ndef evaluate(messages, **kw):\n    return 1.0\n"
    ids = [f"queued-{number}" for number in range(6)]
    uploads = [
        threading.Thread(target=upload, args=(client, evaluator_id, tar_gz({"score.py": slow})))
        for evaluator_id in ids
    ]
    for thread in uploads:
        thread.start()
    most_checks, most_building, messages = 0, 0, set()

    def all_settled() -> bool:
        nonlocal most_checks, most_building
        most_checks = max(most_checks, len(build_checks_running(server.state_dir)))
        listed = client.get(f"{A}/evaluators", params={"pageSize": 100}).json()["evaluators"]
        ours = [e for e in listed if e["name"].rsplit("/", 1)[1] in ids]
        states = [e["status"]["message"] for e in ours if e["state"] == "BUILDING"]
        messages.update(states)
        most_building = max(most_building, states.count(BUILDING_MESSAGE))
        return len(ours) == len(ids) and not states

    wait_for(all_settled, "six slow evaluators to build", timeout_s=120, every_s=0.1)
    for thread in uploads:
        thread.join()
    assert QUEUED_MESSAGE in messages
    assert 1 <= most_checks <= MAX_PARALLEL_BUILDS
    assert most_building <= MAX_PARALLEL_BUILDS
    for evaluator_id in ids:
        assert client.get(f"{A}/evaluators/{evaluator_id}").json()["state"] == "ACTIVE"
