"""The server the launcher starts inherits none of the launcher's secrets: its environment is an allowlist."""

from __future__ import annotations

from pathlib import Path

from server_harness import free_port, wait_for

from rftlab.paths import state_dir
from rftlab.server.daemon import ensure_local_server, is_healthy
from rftlab.server.serve import main as serve_main


def test_the_launchers_secrets_stay_out_of_the_servers_environment(marker_secrets, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-marker-SECRET")
    monkeypatch.setenv("FIREWORKS_ACCOUNT_ID", "someone")
    base_url = f"http://127.0.0.1:{free_port()}"
    ensure_local_server(base_url)
    try:
        pid = int((state_dir() / "server.pid").read_text())
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    finally:
        assert serve_main(["--stop"]) == 0
        wait_for(lambda: not is_healthy(base_url), "the server to stop", timeout_s=30)
    for secret in (*marker_secrets, "aws-marker-SECRET"):
        assert secret.encode() not in environ
    assert not {name for name in names if name.startswith(("FIREWORKS_", "WANDB_API", "AWS_"))}
    assert {"HOME", "PATH", "RFTLAB_HOME"} <= names
