"""`rftlab launch` with an MCP server against the real local backend: a URL is registered once (by hash) with its
key uploaded as a secret from the environment, checked ACTIVE, then named by the job; an unreachable one stops the
launch with the backend's reason; a dry run shows the registration and sends nothing."""

from __future__ import annotations

import pytest
from mcp_fixtures import mcp_server
from server_harness import LocalServer, free_port, project_folder

from rftlab import cli

TOKEN = "mcp-launch-TOKEN-77ab"
pytestmark = (
    pytest.mark.slow
)  # a server and an MCP server per module; the resource and rollout tests are fast


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("launch-server"), max_running_jobs=0) as running:
        yield running


@pytest.fixture
def workdir(server, tmp_path, monkeypatch):
    with project_folder(server, tmp_path, monkeypatch, rows=16) as folder:
        yield folder


def launch(server: LocalServer, *overrides: str) -> int:
    return cli.main(["launch", f"backend.base_url={server.base_url}", "dataset.path=rows.jsonl", *overrides])


def listed(server: LocalServer, collection: str) -> list[dict]:
    with server.client() as client:
        return client.get(f"/v1/accounts/local/{collection}").json()[collection]


def test_a_url_is_registered_once_with_its_key_as_a_secret_and_named_by_the_job(
    server, workdir, monkeypatch, capsys
):
    monkeypatch.setenv("MY_MCP_KEY", TOKEN)
    with mcp_server(token=TOKEN) as mcp:
        key = [
            f"mcp_server.url={mcp.url}",
            "mcp_server.auth=BEARER_TOKEN",
            "mcp_server.api_key_env=MY_MCP_KEY",
        ]
        assert launch(server, *key, "dry_run=true") == 0
        dry = capsys.readouterr().out
        assert (
            "mcp create" in dry and mcp.url in dry and TOKEN not in dry and listed(server, "mcpServers") == []
        )

        assert launch(server, *key, "training.learning_rate=1e-4") == 0
        assert launch(server, *key, "training.learning_rate=2e-4") == 0
        (registered,) = listed(server, "mcpServers")
        assert registered["state"] == "ACTIVE" and registered["endpointUrl"] == mcp.url
        assert mcp.stats()["authorization"] == [f"Bearer {TOKEN}"], (
            "probed once, with the key from the secret"
        )
        jobs = [job for job in listed(server, "reinforcementFineTuningJobs") if job.get("mcpServer")]
        assert len(jobs) == 2 and {job["mcpServer"] for job in jobs} == {registered["name"]}
        assert TOKEN not in capsys.readouterr().out


def test_an_unreachable_server_stops_the_launch_with_the_reason(server, workdir, capsys):
    url = f"http://127.0.0.1:{free_port()}/mcp"
    assert launch(server, f"mcp_server.url={url}") == 1
    out = capsys.readouterr()
    assert "is FAILED, not ACTIVE" in out.out + out.err and url in out.out + out.err
