"""The dashboard of a real `rftlab serve`: login and session cookie, the pages at Fireworks' paths, the REST routes
read with the cookie, and one account never seeing another's jobs."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from rollout_fixtures import seed_job
from server_harness import LocalServer

JOB_PAGE = "/dashboard/fine-tuning/reinforcement/{}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LocalServer.under(tmp_path_factory.mktemp("server"), max_running_jobs=0) as running:
        with running.client() as client:
            seed_job(running, client, "local", "seeded", 3)
        other_key = running.add_account("other")
        with running.client(other_key) as client:
            seed_job(running, client, "other", "theirs", 2)
        running.other_key = other_key
        yield running


def browser(server: LocalServer) -> httpx.Client:
    """A client without a bearer key, keeping cookies like a browser."""
    return httpx.Client(base_url=server.base_url, timeout=30)


@contextmanager
def logged_in(server: LocalServer, key: str) -> Iterator[httpx.Client]:
    with browser(server) as client:
        answer = client.post("/dashboard/login", data={"api_key": key, "next": JOB_PAGE.format("seeded")})
        assert answer.status_code == 303 and answer.headers["location"] == JOB_PAGE.format("seeded")
        yield client


def test_pages_without_a_session_go_to_the_login_form_and_come_back(server):
    with browser(server) as client:
        answer = client.get(JOB_PAGE.format("seeded"))
        assert answer.status_code == 303
        assert (
            answer.headers["location"] == "/dashboard/login?next=/dashboard/fine-tuning/reinforcement/seeded"
        )
        form = client.get(answer.headers["location"])
        assert (
            'name="api_key"' in form.text
            and 'value="/dashboard/fine-tuning/reinforcement/seeded"' in form.text
        )


def test_a_wrong_key_is_refused_and_an_outside_next_is_ignored(server):
    with browser(server) as client:
        refused = client.post("/dashboard/login", data={"api_key": "rftlab_wrong"})
        assert refused.status_code == 401 and "opens no account" in refused.text
        assert "set-cookie" not in refused.headers
        answer = client.post(
            "/dashboard/login", data={"api_key": server.local_key(), "next": "https://example.com/"}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"


def test_the_session_cookie_is_httponly_strict_and_stored_only_hashed(server):
    with browser(server) as client:
        answer = client.post("/dashboard/login", data={"api_key": server.local_key()})
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        token = client.cookies["rftlab_session"]
    with sqlite3.connect(server.state_dir / "rftlab.db") as db:
        stored = [row[0] for row in db.execute("SELECT token_hash FROM dashboard_sessions")]
    assert stored and token not in stored and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in stored)


def test_every_page_answers_with_its_shell_and_a_policy_keeping_requests_on_this_server(server):
    with logged_in(server, server.local_key()) as client:
        for path, page in [
            ("/dashboard", 'data-page="jobs"'),
            (JOB_PAGE.format("seeded"), 'data-page="job"'),
            ("/dashboard/datasets/rows", 'data-page="dataset"'),
            ("/dashboard/evaluators/exact", 'data-page="evaluator"'),
            ("/dashboard/sweeps/seeded", 'data-page="sweep"'),
        ]:
            answer = client.get(path)
            assert answer.status_code == 200, path
            assert page in answer.text and 'data-account="local"' in answer.text
            policy = answer.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "connect-src 'self'" in policy
            assert "http" not in re.sub(r'"/dashboard/static/[^"]+"', "", answer.text.split("<body")[0])
        for name in ("dashboard.js", "dashboard.css", "uPlot.iife.min.js", "uPlot.min.css"):
            asset = client.get(f"/dashboard/static/{name}")
            assert asset.status_code == 200 and len(asset.content) > 1000, name
        assert client.get("/dashboard/static/..%2Froutes.py").status_code == 404


def test_the_cookie_reads_the_rest_routes_but_never_changes_anything(server):
    with logged_in(server, server.local_key()) as client:
        jobs = client.get("/v1/accounts/local/reinforcementFineTuningJobs")
        assert jobs.status_code == 200 and jobs.json()["reinforcementFineTuningJobs"]
        assert (
            len(client.get("/v1/accounts/local/reinforcementFineTuningJobs/seeded/metrics").json()["metrics"])
            == 3
        )
        rollouts = client.get(
            "/v1/accounts/local/reinforcementFineTuningJobs/seeded/rollouts", params={"step": 1}
        )
        assert len(rollouts.json()["rollouts"]) == 8
        rows = client.get("/dashboard/api/datasets/rows/rows").json()["rows"]
        assert len(rows) == 8 and rows[0]["messages"][0]["role"] == "user"
        cancel = client.post("/v1/accounts/local/reinforcementFineTuningJobs/seeded:cancel")
        assert cancel.status_code == 401
        assert client.get("/v1/accounts/local/reinforcementFineTuningJobs/seeded").json()["state"] == (
            "JOB_STATE_PENDING"
        )


def test_bearer_keys_read_the_json_routes_and_pages_too(server):
    with server.client() as client:
        assert (
            client.get("/v1/accounts/local/reinforcementFineTuningJobs/seeded/rolloutSteps").status_code
            == 200
        )
        assert client.get("/dashboard/api/datasets/rows/rows").status_code == 200
        assert client.get(JOB_PAGE.format("seeded")).status_code == 200


def test_one_account_never_sees_anothers_job_dataset_or_evaluator(server):
    with logged_in(server, server.other_key) as client:
        assert client.get(JOB_PAGE.format("theirs")).status_code == 200
        page = client.get(JOB_PAGE.format("seeded"))
        assert page.status_code == 404 and 'data-page="missing"' in page.text
        assert client.get("/v1/accounts/local/reinforcementFineTuningJobs/seeded/rollouts").status_code == 404
        assert client.get("/v1/accounts/local/reinforcementFineTuningJobs").status_code == 404
        listed = client.get("/v1/accounts/other/reinforcementFineTuningJobs").json()
        assert [job["name"].rsplit("/", 1)[1] for job in listed["reinforcementFineTuningJobs"]] == ["theirs"]
    with logged_in(server, server.local_key()) as client:
        assert client.get(JOB_PAGE.format("theirs")).status_code == 404


def test_logging_out_ends_the_session(server):
    with logged_in(server, server.local_key()) as client:
        token = client.cookies["rftlab_session"]
        assert client.post("/dashboard/logout").status_code == 303
    with browser(server) as client:
        client.cookies.set("rftlab_session", token)
        assert client.get("/v1/accounts/local/reinforcementFineTuningJobs").status_code == 401
        assert client.get("/dashboard").status_code == 303
