"""rftlab.sandbox with real processes on this host: what a confined command can and cannot reach, each denial
checked against the same command unconfined, so a test fails if the sandbox stops denying."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rftlab import sandbox
from rftlab.sandbox import Limits, SandboxPolicy, SandboxUnavailable
from rftlab.sandbox import host as sandbox_host

HOST = sandbox.capabilities()
needs_landlock = pytest.mark.skipif(not HOST.landlock_abi, reason="this kernel has no Landlock")
needs_pid_namespace = pytest.mark.skipif(not HOST.pid_namespace, reason="no PID namespaces here")


def python(script: str, policy: SandboxPolicy | None, cwd: Path, timeout_s: float = 20) -> sandbox.Finished:
    return sandbox.run(
        [sys.executable, "-I", "-c", textwrap.dedent(script)], policy, cwd=cwd, timeout_s=timeout_s
    )


@needs_landlock
def test_files_outside_the_allowed_paths_cannot_be_read_even_by_root(tmp_path):
    secret = tmp_path / "private" / "auth.ini"
    secret.parent.mkdir()
    secret.write_text("api_key = other-account-key\n")
    secret.chmod(0o600)
    script = f"""
        try:
            print(open({str(secret)!r}).read())
        except PermissionError as error:
            print("denied", error.errno)
        """
    assert "other-account-key" in python(script, None, tmp_path).output
    confined = python(script, SandboxPolicy(), tmp_path)
    assert confined.returncode == 0
    assert confined.output.strip() == "denied 13"


@pytest.mark.skipif(HOST.landlock_abi < 6, reason="needs Landlock ABI 6 to run without namespaces")
def test_landlock_alone_confines_a_process_that_keeps_the_hosts_uid(tmp_path, monkeypatch):
    secret = tmp_path / "auth.ini"
    secret.write_text("api_key = other-account-key\n")
    secret.chmod(0o600)
    without_namespaces = dataclasses.replace(sandbox_host.NOTHING, landlock_abi=HOST.landlock_abi)
    monkeypatch.setattr(sandbox_host, "capabilities", lambda: without_namespaces)
    script = f"""
        import os
        try:
            open({str(secret)!r}).read()
            print("read as uid", os.getuid())
        except PermissionError:
            print("denied as uid", os.getuid())
        """
    assert python(script, SandboxPolicy(), tmp_path).output.strip() == f"denied as uid {os.getuid()}"


@needs_landlock
def test_read_only_paths_are_readable_and_not_writable(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "data.txt").write_text("mine")
    script = """
        import os
        print(open("data.txt").read())
        for target in ("data.txt", "new.txt"):
            try:
                open(target, "a").write("x")
                print("wrote", target)
            except PermissionError:
                print("read-only", target)
        """
    finished = python(script, SandboxPolicy(read_only=(code,)), code)
    assert finished.output.split() == ["mine", "read-only", "data.txt", "read-only", "new.txt"]
    assert (code / "data.txt").read_text() == "mine"


@needs_landlock
def test_the_scratch_folder_is_home_writable_and_removed_with_the_process(tmp_path):
    script = """
        import os, pathlib
        home = pathlib.Path(os.environ["HOME"])
        (home / "cache").mkdir()
        (home / "cache" / "f").write_text("x")
        pathlib.Path(os.environ["TMPDIR"], "t").write_text("y")
        print(home)
        for outside in ("/tmp/rftlab-escape", str(home.parent / "rftlab-escape")):
            try:
                open(outside, "w")
                print("escaped")
            except PermissionError:
                pass
        """
    finished = python(script, SandboxPolicy(scratch_parent=tmp_path), tmp_path)
    scratch = Path(finished.output.split()[0])
    assert finished.returncode == 0 and "escaped" not in finished.output
    assert scratch.parent == tmp_path.resolve()
    assert not scratch.exists()


def test_the_environment_is_the_allowlist_plus_the_declared_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("FIREWORKS_API_KEY", "server-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-cloud-key")
    monkeypatch.setenv("RFTLAB_DATABASE_URL", "postgresql://server:pw@db/rftlab")
    script = "import os, json; print(json.dumps(sorted(os.environ)))"
    policy = SandboxPolicy(env={"OPENAI_API_KEY": "the-accounts-own-key"})
    names = set(json.loads(python(script, policy, tmp_path).output))
    assert {"HOME", "TMPDIR", "OPENAI_API_KEY"} <= names
    assert not names & {"FIREWORKS_API_KEY", "AWS_SECRET_ACCESS_KEY", "RFTLAB_DATABASE_URL"}


@needs_landlock
def test_no_tcp_connection_leaves_the_sandbox_unless_the_policy_allows_network(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        script = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
                print("connected")
            except OSError as error:
                print("refused", type(error).__name__)
            """
        assert python(script, SandboxPolicy(), tmp_path).output.startswith("refused")
        assert python(script, SandboxPolicy(network=True), tmp_path).output.strip() == "connected"


@needs_landlock
def test_other_processes_cannot_be_read_or_signalled(tmp_path):
    script = f"""
        import os
        for path in ("/proc/{os.getpid()}/environ", "/proc/1/environ", "/proc/{os.getpid()}/cmdline"):
            try:
                open(path, "rb").read()
                print("read", path)
            except OSError:
                pass
        try:
            os.listdir("/proc")
            print("listed /proc")
        except OSError:
            pass
        try:
            os.kill({os.getpid()}, 0)
            print("can signal the server")
        except OSError:
            pass
        print(len(open("/proc/self/status").read()) > 0)
        """
    unconfined = python(script, None, tmp_path).output
    assert "can signal the server" in unconfined and "listed /proc" in unconfined
    assert python(script, SandboxPolicy(), tmp_path).output.split() == ["True"]


def test_resource_limits_bound_memory_and_file_size(tmp_path):
    script = """
        import os
        try:
            blocks = [bytes(64 << 20) for _ in range(64)]  # calloc: address space, no page touched
            print("allocated 4 GiB")
        except MemoryError:
            print("memory bounded")
        try:
            with open(os.path.join(os.environ["HOME"], "big"), "wb") as file:
                file.write(b"x" * (4 << 20))
            print("wrote 4 MiB")
        except OSError:
            print("file size bounded")
        """
    limits = Limits(address_space_bytes=1 << 30, file_size_bytes=1 << 20)
    finished = python(script, SandboxPolicy(limits=limits), tmp_path)
    assert finished.output.split() == ["memory", "bounded", "file", "size", "bounded"]


@pytest.mark.skipif(not HOST.mount_namespace, reason="no mount namespaces here")
def test_the_scratch_folder_is_bounded_in_total_and_invisible_outside(tmp_path):
    script = """
        import os, time
        home, written = os.environ["HOME"], 0
        try:
            for i in range(64):  # files under the file-size limit, many of them
                with open(os.path.join(home, f"f{i}"), "wb") as file:
                    file.write(b"x" * (1 << 20))
                written += 1
        except OSError as error:
            print("full after", written, error.strerror, flush=True)
        time.sleep(600)
        """
    process = sandbox.start(
        [sys.executable, "-I", "-c", textwrap.dedent(script)],
        SandboxPolicy(scratch_bytes=8 << 20, scratch_parent=tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
    )
    try:
        said = process.popen.stdout.readline().decode()
        assert said.startswith(("full after 7 No space left", "full after 8 No space left"))
        assert [path.name for path in process.scratch.iterdir()] == [
            "tmp"
        ]  # the host's folder under the tmpfs
    finally:
        process.kill()


@pytest.mark.skipif(not HOST.mount_namespace, reason="no mount namespaces here")
def test_multiprocessing_works_on_a_private_dev_shm(tmp_path):
    (tmp_path / "parallel.py").write_text(
        "import multiprocessing, os\n"
        "def square(x):\n"
        "    return x * x\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.Pool(2) as pool:\n"
        "        print(sum(pool.map(square, range(10))))\n"
        f"    open('/dev/shm/rftlab-{os.getpid()}', 'w').write('x')\n"
    )
    policy = SandboxPolicy(read_only=(tmp_path,))
    finished = sandbox.run([sys.executable, "-I", "parallel.py"], policy, cwd=tmp_path, timeout_s=30)
    assert finished.output.strip() == "285"
    assert not Path(f"/dev/shm/rftlab-{os.getpid()}").exists()


@needs_pid_namespace
def test_killing_a_sandboxed_process_ends_everything_it_started(tmp_path):
    token = f"{int(time.time() * 1e6) % 10**9}"
    script = f"""
        import os, time
        if os.fork() == 0:
            os.setsid()  # leaves the process group: only the PID namespace still holds it
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", "600.{token}"])
            os._exit(0)
        time.sleep(600)
        """
    process = sandbox.start(
        [sys.executable, "-I", "-c", textwrap.dedent(script)], SandboxPolicy(), cwd=tmp_path
    )
    survivor = _wait_for_process_with(f"sleep\x00600.{token}")
    assert survivor is not None
    process.kill()
    assert _gone(survivor)
    assert not process.scratch.exists()


@needs_pid_namespace
def test_a_sandboxed_process_ends_when_the_process_that_started_it_is_killed(tmp_path):
    token = f"{int(time.time() * 1e6) % 10**9}"
    starter = textwrap.dedent(
        f"""
        import sys, threading, time
        from pathlib import Path
        from rftlab import sandbox
        def start():  # from a thread that ends at once, as the evaluator pool's starters do
            sandbox.start(["/bin/sleep", "600.{token}"], sandbox.SandboxPolicy(), cwd=Path("/"))
        thread = threading.Thread(target=start)
        thread.start()
        thread.join()
        print("started", flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "started"
        command = _wait_for_process_with(f"/bin/sleep\x00600.{token}")
        assert command is not None
        time.sleep(0.5)
        assert not _gone(command, 0)
    finally:
        parent.kill()
        parent.wait()
    assert _gone(command)


def test_a_timeout_kills_the_command_and_says_so(tmp_path):
    started = time.monotonic()
    finished = python(
        "import time; print('started', flush=True); time.sleep(60)", SandboxPolicy(), tmp_path, 1
    )
    assert finished.returncode is None
    assert finished.output.strip() == "started"
    assert time.monotonic() - started < 10


def test_a_command_that_closes_its_output_still_ends_at_its_timeout(tmp_path):
    started = time.monotonic()
    # Unconfined, so that no launcher holds the pipe open: the reader sees the end of the output first.
    finished = python("import os, time; os.close(1); os.close(2); time.sleep(60)", None, tmp_path, 1)
    assert (finished.returncode, finished.stopped) == (None, "took longer than 1 s")
    assert time.monotonic() - started < 10


def test_a_watch_stops_the_command_with_its_reason(tmp_path):
    script = "import time; open('grown', 'w').write('x'); time.sleep(60)"
    started = time.monotonic()
    finished = sandbox.run(
        [sys.executable, "-I", "-c", script],
        SandboxPolicy(read_write=(tmp_path,)),
        cwd=tmp_path,
        timeout_s=30,
        watch=lambda: "it grew" if (tmp_path / "grown").exists() else None,
        watch_interval_s=0.1,
    )
    assert (finished.returncode, finished.stopped) == (None, "it grew")
    assert time.monotonic() - started < 10


def test_output_is_kept_to_its_tail(tmp_path):
    script = "import sys; sys.stdout.write('x' * 1_000_000 + '\\nlast line\\n')"
    finished = sandbox.run(
        [sys.executable, "-I", "-c", script], SandboxPolicy(), cwd=tmp_path, timeout_s=20, output_limit=100
    )
    assert finished.output.endswith("last line\n")
    assert len(finished.output) == 100 and finished.dropped_bytes == 1_000_011 - 100


def test_exit_codes_and_deaths_by_signal_come_through_the_launcher(tmp_path):
    assert python("raise SystemExit(3)", SandboxPolicy(), tmp_path).returncode == 3
    segfault = python("import ctypes; ctypes.string_at(0)", SandboxPolicy(), tmp_path)
    assert segfault.returncode == -11


def test_a_host_without_confinement_refuses_untrusted_code_unless_the_operator_opts_in(tmp_path, monkeypatch):
    bare = sandbox_host.NOTHING
    assert len(bare.missing()) == 3 and "UNSAFE" in bare.describe()
    landlock_only = dataclasses.replace(bare, landlock_abi=4)  # TCP rules, but signals reach the server
    assert [gap.split(" (")[0] for gap in landlock_only.missing()] == ["process isolation"]
    assert dataclasses.replace(bare, landlock_abi=6).missing() == []
    monkeypatch.setattr(sandbox_host, "capabilities", lambda: bare)
    monkeypatch.delenv(sandbox.ALLOW_UNSANDBOXED_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="RFTLAB_ALLOW_UNSANDBOXED=1"):
        sandbox.start([sys.executable, "-c", "pass"], SandboxPolicy(), cwd=tmp_path)
    monkeypatch.setenv(sandbox.ALLOW_UNSANDBOXED_ENV, "1")
    finished = python("import os; print(os.environ['HOME'])", SandboxPolicy(), tmp_path)
    assert finished.returncode == 0 and "rftlab-sandbox-" in finished.output


def test_this_host_is_described_in_one_line():
    line = HOST.describe()
    assert line.startswith("evaluator sandbox ") and "\n" not in line


def _wait_for_process_with(marker: str, timeout_s: float = 10) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit() and _cmdline(entry).startswith(marker) and not _gone(int(entry), 0):
                return int(entry)
        time.sleep(0.05)
    return None


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def _gone(pid: int, timeout_s: float = 5) -> bool:
    """No such process, or only its zombie left."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
