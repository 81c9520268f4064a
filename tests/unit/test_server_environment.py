"""What the environment allowlists pass on: the auto-started server learns how uv reaches packages (for its
evaluator builds); job workers, and so user code, get neither that nor the server's secrets."""

from __future__ import annotations

from rftlab.server.clean_env import clean_environment
from rftlab.server.daemon import server_environment


def test_the_server_gets_the_uv_settings_and_workers_do_not(monkeypatch):
    monkeypatch.setenv("UV_FIND_LINKS", "/srv/wheels")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw-secret")
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret")
    server = server_environment()
    assert server["UV_FIND_LINKS"] == "/srv/wheels" and server["HTTPS_PROXY"] == "http://proxy.internal:3128"
    worker = clean_environment()
    assert "UV_FIND_LINKS" not in worker and "HTTPS_PROXY" not in worker
    for env in (server, worker):
        assert "FIREWORKS_API_KEY" not in env and "WANDB_API_KEY" not in env
        assert env["PATH"]
