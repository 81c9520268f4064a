"""A hostile evaluator, run as `rftlab serve` runs it (sandboxed evaluator pool, sandboxed build check), tries each
escape: other accounts' files and keys, the database, the server's environment, writes outside its scratch
folder, the network, a process that outlives the job, memory and output bombs, a hang at import, forged protocol
lines. Each is denied while a well-behaved call still scores; where it matters, the same attack run unconfined
succeeds, so these tests fail if the sandbox stops denying."""

from __future__ import annotations

import json
import os
import re
import socket
import textwrap
import time
from pathlib import Path

import pytest

from rftlab.engine.api import EvaluatorCode, JobFailed
from rftlab.engine.evaluator import EvaluatorPool
from rftlab.sandbox import Limits, SandboxPolicy, capabilities
from rftlab.server.evaluator_build import BuildError, Entry, check_entry

pytestmark = pytest.mark.skipif(
    capabilities().missing() != [], reason="this host lacks filesystem or network confinement"
)

HOSTILE = textwrap.dedent(
    """
    import json, os, socket, sys, time

    def attempt(action):
        try:
            action()
            return "done"
        except Exception as error:
            return type(error).__name__

    def append(path):
        with open(path, "a") as file:
            file.write("planted")

    def evaluate(messages, ground_truth=None, **fields):
        what = messages[-1]["content"]
        if what == "read":
            return {"score": 1.0, "reason": json.dumps({p: attempt(lambda p=p: open(p, "rb").read()) for p in ground_truth})}
        if what == "write":
            return {"score": 1.0, "reason": json.dumps({p: attempt(lambda p=p: append(p)) for p in ground_truth})}
        if what == "signal":
            return {"score": 1.0, "reason": attempt(lambda: os.kill(ground_truth, 0))}
        if what == "connect":
            return {"score": 1.0, "reason": attempt(lambda: socket.create_connection(("127.0.0.1", ground_truth), 5))}
        if what == "env":
            return {"score": 1.0, "reason": json.dumps(dict(os.environ))}
        if what == "fork":
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", ground_truth])
                os._exit(0)
            return 1.0
        if what == "memory":
            hoard = []
            while True:
                hoard.append(bytearray(32 << 20))
        if what == "print":
            for _ in range(20):
                print("x" * (1 << 20))
            return 1.0
        if what == "forge-garbage":
            os.write(3, b"this is not an answer\\n")
            time.sleep(0.5)
            return 1.0
        if what == "forge-shape":
            os.write(3, b'{"ok": true, "result": {"score": "1", "reason": 5}}\\n')
            time.sleep(0.5)
            return 1.0
        if what == "stall":  # answer at once through the pipe, then stop reading calls
            os.write(3, b'{"ok": true, "result": {"score": 1.0, "reason": "", "is_score_valid": true, "metrics": {}}, '
                     b'"timing": {"wall_s": 0, "cpu_s": 0, "runnable_s": 0}}\\n')
            time.sleep(3600)
        if what == "forge-endless":
            os.write(3, b"x" * (3 << 20))
            time.sleep(0.5)
            return 1.0
        return 1.0
    """
)


@pytest.fixture
def server(tmp_path, isolated_env):
    """A state dir with another account's data, the server's HOME with a Fireworks profile, and our evaluator's
    code folder where the server unpacks it."""
    state = tmp_path / "state"
    other = state / "accounts" / "other"
    (other / "datasets" / "d").mkdir(parents=True)
    (other / "datasets" / "d" / "data.jsonl").write_text('{"messages": []}\n')
    (other / "evaluators" / "e" / "code").mkdir(parents=True)
    (other / "evaluators" / "e" / "code" / "main.py").write_text("JUDGE_KEY = 'other-account-judge-key'\n")
    (state / "rftlab.db").write_text("wandb_api_key=wandb-marker-SECRET\n")
    profile = isolated_env / ".fireworks" / "profiles" / "other" / "auth.ini"
    profile.parent.mkdir(parents=True)
    profile.write_text("api_key = fw-other-account-key\n")
    code = state / "accounts" / "me" / "evaluators" / "mine" / "code"
    code.mkdir(parents=True)
    (code / "main.py").write_text(HOSTILE)
    return {
        "state": state,
        "code": EvaluatorCode(code, "main.py", "evaluate"),
        "secrets": [
            str(profile),
            str(state / "rftlab.db"),
            str(other / "datasets" / "d" / "data.jsonl"),
            str(other / "evaluators" / "e" / "code" / "main.py"),
            f"/proc/{os.getpid()}/environ",
        ],
    }


def call(pool: EvaluatorPool, what: str, ground_truth=None):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": what}]
    return pool.submit(messages, ground_truth, {}).result(timeout=60)


def test_other_accounts_keys_the_database_and_the_servers_environment_cannot_be_read(server):
    with EvaluatorPool(server["code"], 1, 10, sandbox=None) as unconfined:
        assert set(json.loads(call(unconfined, "read", server["secrets"]).reason).values()) == {"done"}
    with EvaluatorPool(server["code"], 1, 10) as pool:
        outcome = json.loads(call(pool, "read", server["secrets"]).reason)
        assert outcome == dict.fromkeys(server["secrets"], "PermissionError")
        assert call(pool, "well-behaved").value == 1.0


def test_nothing_outside_the_scratch_folder_can_be_written(server, tmp_path):
    state = server["state"]
    targets = [
        str(state / "accounts" / "other" / "datasets" / "d" / "data.jsonl"),
        str(state / "rftlab.db"),
        str(state / "planted.txt"),
        str(server["code"].root / "main.py"),
        str(Path(os.environ["HOME"]) / ".bashrc"),
        str(tmp_path / "planted.txt"),
        "/tmp/rftlab-planted.txt",
    ]
    with EvaluatorPool(server["code"], 1, 10) as pool:
        outcome = json.loads(call(pool, "write", targets).reason)
        assert outcome == dict.fromkeys(targets, "PermissionError")
    assert "planted" not in (state / "rftlab.db").read_text()
    assert not (state / "planted.txt").exists() and not (tmp_path / "planted.txt").exists()


def test_the_server_cannot_be_signalled_and_only_declared_secrets_arrive(server, monkeypatch):
    monkeypatch.setenv("FIREWORKS_API_KEY", "fw-server-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-cloud-key")
    policy = SandboxPolicy(env={"JUDGE_API_KEY": "the-accounts-own-judge-key"})
    with EvaluatorPool(server["code"], 1, 10, sandbox=policy) as pool:
        assert call(pool, "signal", os.getpid()).reason in ("ProcessLookupError", "PermissionError")
        env = json.loads(call(pool, "env").reason)
    assert env["JUDGE_API_KEY"] == "the-accounts-own-judge-key"
    assert "fw-server-key" not in env.values() and "server-cloud-key" not in env.values()
    assert env["HOME"] != os.environ["HOME"] and "rftlab-sandbox-" in env["HOME"]


def test_no_network_unless_the_evaluator_asks_for_it(server):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        with EvaluatorPool(server["code"], 1, 10) as pool:
            assert call(pool, "connect", port).reason in ("PermissionError", "OSError")
        with EvaluatorPool(server["code"], 1, 10, sandbox=SandboxPolicy(network=True)) as pool:
            assert call(pool, "connect", port).reason == "done"


def test_a_process_forked_by_the_evaluator_dies_with_the_pool(server):
    token = f"700.{int(time.time() * 1e6) % 10**9}"
    with EvaluatorPool(server["code"], 1, 10) as pool:
        assert call(pool, "fork", token).value == 1.0
        survivor = _find_process(f"sleep\x00{token}")
        assert survivor is not None and _alive(survivor)
    deadline = time.monotonic() + 5
    while _alive(survivor) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(survivor)


def test_a_memory_bomb_fails_its_call_and_the_pool_goes_on(server):
    policy = SandboxPolicy(limits=Limits(address_space_bytes=512 << 20))
    with EvaluatorPool(server["code"], 1, 30, sandbox=policy) as pool:
        bomb = call(pool, "memory")
        assert not bomb.valid and "MemoryError" in bomb.error
        assert call(pool, "well-behaved").value == 1.0


def test_an_output_bomb_reaches_the_log_truncated_and_counted(server, capfd):
    with EvaluatorPool(server["code"], 1, 30, output_limit=64 << 10) as pool:
        assert call(pool, "print").value == 1.0
        assert call(pool, "well-behaved").value == 1.0
    logged = capfd.readouterr().err
    assert len(logged) < 200 << 10
    dropped = [int(n) for n in re.findall(r"over 65536 bytes in one call: (\d+) more bytes dropped", logged)]
    assert sum(dropped) > 19 << 20


@pytest.mark.parametrize("forgery", ["forge-garbage", "forge-shape", "forge-endless"])
def test_a_forged_protocol_line_fails_that_call_only(server, forgery):
    with EvaluatorPool(server["code"], 1, 10) as pool:
        forged = call(pool, forgery)
        assert not forged.valid and "broke the answer protocol" in forged.error
        assert call(pool, "well-behaved").value == 1.0


def test_a_worker_that_stops_reading_its_calls_cannot_stall_the_pool(server):
    with EvaluatorPool(server["code"], 1, 2) as pool:
        assert call(pool, "stall").value == 1.0  # the forged answer; the worker now reads nothing
        started = time.monotonic()
        stuck = call(pool, "x" * (4 << 20))  # more than the pipe holds: the write cannot finish
        assert "timed out after 2 s" in stuck.error and time.monotonic() - started < 10
        assert call(pool, "well-behaved").value == 1.0


def test_an_evaluator_that_hangs_at_import_fails_the_job_within_the_start_timeout(tmp_path):
    (tmp_path / "stuck.py").write_text(
        "import time\ntime.sleep(3600)\n\ndef evaluate(m, **k):\n    return 1.0\n"
    )
    started = time.monotonic()
    with pytest.raises(JobFailed, match=r"the evaluator stuck.py did not finish importing within 2 s"):
        EvaluatorPool(EvaluatorCode(tmp_path, "stuck.py", "evaluate"), 4, 10, start_timeout_s=2)
    assert time.monotonic() - started < 10


def test_closing_the_pool_does_not_wait_for_a_replacement_worker_stuck_at_import(tmp_path):
    marker = tmp_path / "hang-now"
    (tmp_path / "fragile.py").write_text(
        "import os, time\n\n"
        f"if os.path.exists({str(marker)!r}):\n"
        "    time.sleep(3600)\n\n"
        "def evaluate(messages, ground_truth=None, **fields):\n"
        "    os._exit(3)\n"
    )
    pool = EvaluatorPool(EvaluatorCode(tmp_path, "fragile.py", "evaluate"), 1, 10, start_timeout_s=600)
    marker.touch()  # the replacement for the worker that is about to crash hangs at import
    assert "died (exit code 3)" in call(pool, "crash").error
    time.sleep(0.5)
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 5


def test_the_build_check_cannot_leak_a_key_through_its_import_error(server):
    code = server["code"].root
    (code / "leak.py").write_text(f"raise ValueError(open({server['secrets'][0]!r}).read())\n")
    with pytest.raises(BuildError, match="PermissionError") as denied:
        check_entry(code, Entry("leak.py", "evaluate"))
    assert "fw-other-account-key" not in str(denied.value)


def _find_process(cmdline_prefix: str, timeout_s: float = 10) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                if (
                    Path(f"/proc/{entry}/cmdline")
                    .read_bytes()
                    .decode(errors="replace")
                    .startswith(cmdline_prefix)
                ):
                    return int(entry)
            except OSError:
                continue
        time.sleep(0.05)
    return None


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
