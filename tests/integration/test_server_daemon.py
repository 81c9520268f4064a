"""Starting and stopping the local backend the way the launcher does: `ensure_local_server` starts `rftlab serve`
in the background or reuses a running one; `rftlab serve --stop` stops it; one server per state dir."""

from __future__ import annotations

import subprocess
import sys

import httpx
from server_harness import LocalServer, free_port, wait_for

from rftlab.fireworks.credentials import read_auth_ini
from rftlab.paths import state_dir
from rftlab.server.daemon import ensure_local_server, is_healthy
from rftlab.server.serve import main as serve_main


def test_ensure_local_server_starts_once_then_reuses_and_stop_ends_it(isolated_env):
    base_url = f"http://127.0.0.1:{free_port()}"
    assert not is_healthy(base_url)
    ensure_local_server(base_url)
    assert is_healthy(base_url)
    profile = read_auth_ini(isolated_env / ".fireworks/profiles/rftlab-local/auth.ini")
    assert profile["account_id"] == "local"
    datasets = httpx.get(
        f"{base_url}/v1/accounts/local/datasets", headers={"Authorization": f"Bearer {profile['api_key']}"}
    )
    assert datasets.status_code == 200
    pid = int((state_dir() / "server.pid").read_text())

    ensure_local_server(base_url)  # reused: same process
    assert int((state_dir() / "server.pid").read_text()) == pid

    assert serve_main(["--stop"]) == 0
    wait_for(lambda: not is_healthy(base_url), "the server to stop", timeout_s=30)
    assert not (state_dir() / "server.pid").exists()
    assert serve_main(["--stop"]) == 0, "stopping when nothing runs is not an error"


def test_a_second_server_on_the_same_state_dir_is_refused(tmp_path):
    with LocalServer.under(tmp_path, max_running_jobs=0) as server:
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "rftlab.server.serve",
                "--port",
                str(free_port()),
                "--state-dir",
                str(server.state_dir),
            ],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another server is using" in second.stderr


def test_add_account_rejects_a_bad_id(tmp_path, capsys):
    assert serve_main(["--state-dir", str(tmp_path), "--add-account", "Bad_Name"]) == 2
    assert "lowercase letters" in capsys.readouterr().err
