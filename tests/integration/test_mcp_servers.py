"""MCP servers as an account resource on a real `rftlab serve`: create probes the endpoint (a real MCP server on
127.0.0.1) and records its tools, an unreachable one ends FAILED with the reason, the key comes from the account's
secrets, and a job naming a FAILED or missing server is refused at create."""

from __future__ import annotations

import pytest
from mcp_fixtures import mcp_server
from server_harness import DATASET, EVALUATOR, LocalServer, add_training_inputs, free_port

A = "/v1/accounts/local"
TOKEN = "mcp-marker-TOKEN-5f1e"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0) as running:
        with running.client() as client:
            add_training_inputs(client)
        yield running


def test_a_reachable_server_goes_active_with_its_tools_and_is_read_listed_patched_and_deleted(server):
    with mcp_server() as mcp, server.client() as client:
        created = client.post(
            f"{A}/mcpServers",
            params={"mcpServerId": "tools"},
            json={"displayName": "Test tools", "endpointUrl": mcp.url, "remoteHosted": True},
        )
        assert created.status_code == 200, created.text
        body = created.json()
        assert body["name"] == "accounts/local/mcpServers/tools"
        assert (body["state"], body["authenticationType"]) == ("ACTIVE", "OPEN")
        assert {t["name"] for t in body["tools"]} == {"multiply", "slow", "fail", "long_text"}
        assert body["createTime"] and body["updateTime"]
        assert mcp.stats()["initialize"] == 1

        assert client.get(f"{A}/mcpServers/tools").json()["state"] == "ACTIVE"
        patched = client.patch(f"{A}/mcpServers/tools", json={"description": "four tools"}).json()
        assert (patched["description"], patched["state"]) == ("four tools", "ACTIVE")
        assert mcp.stats()["initialize"] == 1, "a change that does not move the endpoint is not probed again"
        assert (
            client.post(
                f"{A}/mcpServers", params={"mcpServerId": "tools"}, json={"endpointUrl": mcp.url}
            ).status_code
            == 409
        )

        client.post(f"{A}/mcpServers", params={"mcpServerId": "second"}, json={"endpointUrl": mcp.url})
        first = client.get(f"{A}/mcpServers", params={"pageSize": 1}).json()
        second = client.get(
            f"{A}/mcpServers", params={"pageSize": 1, "pageToken": first["nextPageToken"]}
        ).json()
        assert sorted(s["name"].rsplit("/", 1)[-1] for s in first["mcpServers"] + second["mcpServers"]) == [
            "second",
            "tools",
        ]
        assert client.delete(f"{A}/mcpServers/second").status_code == 200
        assert client.get(f"{A}/mcpServers/second").status_code == 404


def test_an_unreachable_server_is_failed_with_the_reason_and_a_job_naming_it_is_refused(server):
    with server.client() as client:
        url = f"http://127.0.0.1:{free_port()}/mcp"
        body = client.post(
            f"{A}/mcpServers", params={"mcpServerId": "down"}, json={"endpointUrl": url}
        ).json()
        assert body["state"] == "FAILED"
        assert url in body["status"]["message"] and "Connect" in body["status"]["message"]
        job = {"dataset": DATASET, "evaluator": EVALUATOR, "trainingConfig": {"baseModel": "tiny-arith"}}
        refused = client.post(
            f"{A}/reinforcementFineTuningJobs", json={**job, "mcpServer": "accounts/local/mcpServers/down"}
        )
        assert refused.status_code == 400
        assert (
            "mcpServer: accounts/local/mcpServers/down is FAILED, not ACTIVE"
            in refused.json()["error"]["message"]
        )
        missing = client.post(
            f"{A}/reinforcementFineTuningJobs", json={**job, "mcpServer": "accounts/local/mcpServers/nope"}
        )
        assert missing.status_code == 400 and "not found" in missing.json()["error"]["message"]


def test_the_key_comes_from_an_account_secret_and_never_comes_back(server):
    with mcp_server(token=TOKEN) as mcp, server.client() as client:
        open_body = client.post(
            f"{A}/mcpServers", params={"mcpServerId": "locked-open"}, json={"endpointUrl": mcp.url}
        ).json()
        assert open_body["state"] == "FAILED" and "error response" in open_body["status"]["message"]

        no_secret = client.post(
            f"{A}/mcpServers",
            params={"mcpServerId": "locked"},
            json={
                "endpointUrl": mcp.url,
                "authenticationType": "BEARER_TOKEN",
                "apiKeySecret": "accounts/local/secrets/mcp-key",
            },
        )
        assert no_secret.status_code == 400 and "mcp-key not found" in no_secret.json()["error"]["message"]
        client.post(f"{A}/secrets", json={"keyName": "MCP_KEY", "name": "mcp-key", "value": TOKEN})
        body = client.post(
            f"{A}/mcpServers",
            params={"mcpServerId": "locked"},
            json={
                "endpointUrl": mcp.url,
                "authenticationType": "BEARER_TOKEN",
                "apiKeySecret": "accounts/local/secrets/mcp-key",
            },
        ).json()
        assert body["state"] == "ACTIVE", body["status"]
        assert mcp.stats()["authorization"][-1] == f"Bearer {TOKEN}"
        assert TOKEN not in client.get(f"{A}/mcpServers/locked").text

        oauth = client.post(
            f"{A}/mcpServers",
            params={"mcpServerId": "oauth"},
            json={"endpointUrl": mcp.url, "authenticationType": "OAUTH2"},
        )
        assert oauth.status_code == 400 and "OAUTH2 is not supported" in oauth.json()["error"]["message"]
