"""Account secrets on a real `rftlab serve`, driven by the official fireworks-ai SDK as eval-protocol drives it:
write-only values, encrypted at rest, scoped to one account; and the wire rules every route shares (501 for a
route serve lacks, 400 for a list `filter`)."""

from __future__ import annotations

import fireworks
import pytest

A = "/v1/accounts/local"
VALUE = "sk-marker-SECRET-value-93ac11"


@pytest.fixture(scope="module")
def fw(server) -> fireworks.Fireworks:
    return fireworks.Fireworks(api_key=server.local_key(), account_id="local", base_url=server.base_url)


def test_a_secret_is_created_read_updated_listed_and_deleted_without_its_value_ever_coming_back(fw, server):
    with pytest.raises(fireworks.NotFoundError):
        fw.secrets.get("fireworks-api-key")
    created = fw.secrets.create(key_name="FIREWORKS_API_KEY", name="fireworks-api-key", value=VALUE)
    assert (created.name, created.key_name, created.value) == (
        "accounts/local/secrets/fireworks-api-key",
        "FIREWORKS_API_KEY",
        None,
    )
    with pytest.raises(fireworks.ConflictError):
        fw.secrets.create(key_name="FIREWORKS_API_KEY", name="fireworks-api-key", value="again")
    fw.secrets.update("fireworks-api-key", key_name="FIREWORKS_API_KEY", value=VALUE + "-2")
    assert fw.secrets.get("fireworks-api-key").value is None
    assert [s.name for s in fw.secrets.list()] == ["accounts/local/secrets/fireworks-api-key"]
    with server.client() as client:
        assert VALUE not in client.get(f"{A}/secrets").text

    stored = (server.state_dir / "rftlab.db").read_bytes()
    assert VALUE.encode() not in stored and (VALUE + "-2").encode() not in stored
    assert VALUE not in (server.home / "server.log").read_text(errors="replace")

    fw.secrets.delete("fireworks-api-key")
    assert list(fw.secrets.list()) == []


def test_secrets_reach_only_their_own_account(fw, server):
    fw.secrets.create(key_name="JUDGE_TOKEN", name="judge-token", value=VALUE)
    other = server.add_account("other")
    with server.client(other) as client:
        assert client.get("/v1/accounts/other/secrets").json()["secrets"] == []
        assert client.get(f"{A}/secrets/judge-token").status_code == 404

    from rftlab.server.api_secrets import account_secrets
    from rftlab.server.layout import StateLayout
    from rftlab.server.store import Store, sqlite_url

    store = Store(sqlite_url(str(server.state_dir / "rftlab.db")))
    layout = StateLayout(server.state_dir)
    assert account_secrets(store, layout, "local") == {"JUDGE_TOKEN": VALUE}
    assert account_secrets(store, layout, "other") == {}
    store.dispose()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"keyName": "MY KEY", "value": VALUE}, "keyName: 'MY KEY' must be an environment variable name"),
        ({"keyName": "LD_PRELOAD", "value": VALUE}, "would change how the evaluator process runs"),
        ({"keyName": "X", "value": 12345}, "value: must be a string"),
        ({"keyName": "X"}, "value: is required"),
    ],
)
def test_bad_secrets_are_refused_without_echoing_the_value(server, body, complaint):
    with server.client() as client:
        response = client.post(f"{A}/secrets", json=body)
    assert response.status_code == 400
    assert complaint in response.json()["error"]["message"]
    assert VALUE not in response.text and "12345" not in response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{A}/evaluators/exact:getSourceCodeEndpoint"),
        ("PATCH", f"{A}/evaluators/exact"),
        ("GET", f"{A}/deployments"),
        ("POST", f"{A}/reinforcementFineTuningJobs/j:pause"),
        ("GET", f"{A}/reinforcementFineTuningJobs/j:export"),
    ],
)
def test_routes_serve_lacks_answer_501_naming_the_route(server, method, path):
    with server.client() as client:
        response = client.request(method, path)
    assert response.status_code == 501, response.text
    assert response.json()["error"]["status"] == "UNIMPLEMENTED"
    assert f"{method} {path}" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "collection", ["datasets", "evaluators", "models", "secrets", "reinforcementFineTuningJobs"]
)
def test_every_list_route_refuses_a_filter_the_same_way(server, collection):
    with server.client() as client:
        response = client.get(f"{A}/{collection}", params={"filter": 'state="READY"'})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("filter: not supported by the local backend")
