"""`rftlab serve`: run the local backend in the foreground, or stop the one running on a state dir.

    rftlab serve [--host 127.0.0.1] [--port 8317] [--state-dir DIR] [--database-url URL] [--max-running-jobs N]
                 [--keep-rollouts all|sample:N] [--rollouts-max-mb M] [limits: --max-request-mb M ...]
                 [--executor local|ray] [--ray-address ADDR] [--job-cpus N] [--job-gpus N] [--job-memory-gb G]
                 [--storage-url URL]
    rftlab serve --stop [--state-dir DIR]
    rftlab serve --add-account ID [--state-dir DIR] [--database-url URL]   (prints a new API key for ID)

One server per state dir (a lock file enforces it). The first start creates account `local` and an API key and
writes them to ~/.fireworks/profiles/rftlab-local/auth.ini.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from rftlab import sandbox
from rftlab.paths import state_dir
from rftlab.server.accounts import create_key, ensure_local_account
from rftlab.server.evaluator_env import InstallSettings, save_install_settings
from rftlab.server.executors import (
    ExecutorSetting,
    add_executor_flags,
    connect_executor,
    executor_setting_from,
    save_executor_setting,
)
from rftlab.server.layout import StateLayout
from rftlab.server.limits import add_limit_flags, limits_from
from rftlab.server.rollouts import DEFAULT_KEEP, DEFAULT_MAX_MB, RolloutPolicy, save_policy
from rftlab.server.storage import add_storage_flag, checked_storage_url, save_storage_setting
from rftlab.server.store import Store, sqlite_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8317
STOP_TIMEOUT_S = 30.0
UNBOUNDED_RUNNING_JOBS = 1_000_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rftlab serve", description="Run the local Fireworks-compatible RFT backend."
    )
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--state-dir", type=Path, default=None, help="default: $RFTLAB_HOME or ~/.rftlab")
    parser.add_argument(
        "--database-url", default=None, help="SQLAlchemy URL; default: SQLite in the state dir"
    )
    parser.add_argument(
        "--max-running-jobs",
        type=int,
        default=None,
        help="jobs trained at once (0 queues jobs without running them); default: 1, or with --executor ray "
        "as many as the cluster has room for",
    )
    parser.add_argument("--stop", action="store_true", help="stop the server running on this state dir")
    parser.add_argument(
        "--add-account", metavar="ID", help="create account ID (if new), print a new API key, exit"
    )
    parser.add_argument(
        "--keep-rollouts",
        default=DEFAULT_KEEP,
        metavar="all|sample:N",
        help=f"rollouts kept per step for the dashboard and `rftlab rollouts` (default: {DEFAULT_KEEP}: "
        "the best and worst of each group first)",
    )
    parser.add_argument(
        "--rollouts-max-mb",
        type=float,
        default=DEFAULT_MAX_MB,
        help=f"disk for kept rollouts, all jobs together; the oldest go first (default: {DEFAULT_MAX_MB})",
    )
    add_limit_flags(parser)
    add_executor_flags(parser)
    add_storage_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = StateLayout((args.state_dir or state_dir()).expanduser().resolve())
    if args.stop:
        return stop_server(layout)
    if args.max_running_jobs is None:
        args.max_running_jobs = UNBOUNDED_RUNNING_JOBS if args.executor == "ray" else 1
    if args.max_running_jobs < 0:
        print("rftlab serve: --max-running-jobs must be 0 or more", file=sys.stderr)
        return 2
    layout.root.mkdir(parents=True, exist_ok=True)
    database_url = args.database_url or sqlite_url(str(layout.database_path))
    if args.add_account:
        try:
            print(create_key(Store(database_url), args.add_account))
        except ValueError as error:
            print(f"rftlab serve: {error}", file=sys.stderr)
            return 2
        return 0
    try:
        rollout_policy = RolloutPolicy.parse(args.keep_rollouts, args.rollouts_max_mb)
        limits_from(args)
        executor_setting = executor_setting_from(args)
        storage_url = checked_storage_url(args.storage_url)
    except ValueError as error:
        print(f"rftlab serve: {error}", file=sys.stderr)
        return 2
    lock = _lock(layout)
    if lock is None:
        print(
            f"rftlab serve: another server is using {layout.root} (pid {_read_pid(layout)})", file=sys.stderr
        )
        return 1
    return _run(args, layout, database_url, lock, rollout_policy, executor_setting, storage_url)


def _run(
    args: argparse.Namespace,
    layout: StateLayout,
    database_url: str,
    lock: IO[str],
    rollout_policy: RolloutPolicy,
    executor_setting: ExecutorSetting,
    storage_url: str | None,
) -> int:
    import uvicorn

    from rftlab.server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store(database_url)
    ensure_local_account(store)
    save_policy(store, rollout_policy)
    try:
        connect_executor(executor_setting)
    except RuntimeError as error:
        print(f"rftlab serve: {error}", file=sys.stderr)
        return 1
    save_executor_setting(store, executor_setting)
    save_storage_setting(store, storage_url)
    save_install_settings(store, InstallSettings.within(limits_from(args)))
    app = create_app(store, layout, args.max_running_jobs, limits_from(args))
    layout.pid_file.write_text(f"{os.getpid()}\n")
    address = f"http://{args.host}:{args.port}"
    state = f"state: {layout.root}" + (f", storage: {storage_url}" if storage_url else "")
    print(f"rftlab serve: {address} ({state}); dashboard: {address}/dashboard", flush=True)
    print(f"rftlab serve: evaluator sandbox: {sandbox.capabilities().describe()}", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler installed before it ran: this one
    # turns it into SystemExit so the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    except SystemExit:
        pass
    finally:
        layout.pid_file.unlink(missing_ok=True)
        store.dispose()
        lock.close()
    return 0


def _lock(layout: StateLayout) -> IO[str] | None:
    handle = layout.lock_file.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _read_pid(layout: StateLayout) -> int | None:
    try:
        return int(layout.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def stop_server(layout: StateLayout) -> int:
    pid = _read_pid(layout)
    if pid is None or _lock_is_free(layout):
        print(f"rftlab serve: no server running on {layout.root}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _lock_is_free(layout):
            print(f"rftlab serve: stopped (pid {pid})")
            return 0
        time.sleep(0.2)
    print(f"rftlab serve: pid {pid} did not stop within {STOP_TIMEOUT_S:.0f} s", file=sys.stderr)
    return 1


def _lock_is_free(layout: StateLayout) -> bool:
    if not layout.lock_file.exists():
        return True
    lock = _lock(layout)
    if lock is None:
        return False
    lock.close()
    return True


if __name__ == "__main__":
    raise SystemExit(main())
