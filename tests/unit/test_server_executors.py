"""Executors without a cluster: the local one runs the worker command as the scheduler did, the setting survives in
the store, flags are checked, each job's resources are derived and overridden, and sampling blocks depend on the
number of prompts only."""

from __future__ import annotations

import math
import sys
import time

import pytest

from rftlab.engine.rollout_workers import block_bounds, block_seed
from rftlab.server.executors import (
    ExecutorSetting,
    JobResources,
    LocalExecutor,
    RayExecutor,
    ResourceOverrides,
    configured_executor,
    executor_setting_from,
    save_executor_setting,
)
from rftlab.server.serve import build_parser
from rftlab.server.store import Job, Store


@pytest.fixture
def store(tmp_path):
    opened = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    yield opened
    opened.dispose()


def test_the_local_executor_runs_the_command_in_its_own_session_with_its_output_in_the_log(tmp_path):
    log = tmp_path / "job" / "worker.log"
    log.parent.mkdir()
    code = "import os, sys; print('hello', flush=True); print(os.getsid(0) == os.getpid(), file=sys.stderr); sys.exit(3)"
    process = LocalExecutor(max_log_bytes=1 << 20).start(
        Job(seq=1, spec={}), [sys.executable, "-c", code], {}, log
    )
    assert process.wait(timeout=30) == 3
    deadline = time.monotonic() + 10
    while "True" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # the log thread appends what the pipe carried
    assert log.read_text().split() == ["hello", "True"]


def test_the_executor_setting_is_local_until_serve_saves_another(store):
    assert isinstance(configured_executor(store, 1 << 20), LocalExecutor)
    save_executor_setting(store, ExecutorSetting("ray", "127.0.0.1:6379", cpus=2.0, gpus=None, memory_gb=4.0))
    executor = configured_executor(store, 1 << 20)
    assert isinstance(executor, RayExecutor)  # built without reaching the cluster
    assert executor.address == "127.0.0.1:6379"
    assert executor.overrides == ResourceOverrides(cpus=2.0, gpus=None, memory_gb=4.0)
    save_executor_setting(store, ExecutorSetting())
    assert isinstance(configured_executor(store, 1 << 20), LocalExecutor)


def test_serve_flags_become_the_executor_setting(monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RFTLAB_EXECUTOR", raising=False)
    args = build_parser().parse_args(
        ["--executor", "ray", "--ray-address", "10.0.0.1:6379", "--job-gpus", "1", "--job-memory-gb", "8"]
    )
    assert executor_setting_from(args) == ExecutorSetting("ray", "10.0.0.1:6379", None, 1.0, 8.0)
    assert executor_setting_from(build_parser().parse_args([])) == ExecutorSetting()
    monkeypatch.setenv("RFTLAB_EXECUTOR", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.2:6379")
    assert executor_setting_from(build_parser().parse_args([])).ray_address == "10.0.0.2:6379"


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--job-cpus", "-1"], "--job-cpus must be 0 or more"),
        ([], "must be one of local, ray, not 'slurm'"),
        (
            ["--executor", "ray", "--ray-address", "ray://head:10001"],
            "Ray Client addresses are not supported",
        ),
    ],
)
def test_bad_executor_flags_are_named(monkeypatch, argv, error):
    monkeypatch.setenv("RFTLAB_EXECUTOR", "slurm" if not argv else "local")
    with pytest.raises(ValueError, match=error):
        executor_setting_from(build_parser().parse_args(argv))


def test_job_resources_are_derived_from_the_job_and_overridable():
    tiny = {"trainingConfig": {"baseModel": "tiny-arith"}, "nodeCount": 1}
    hub = {"trainingConfig": {"baseModel": "accounts/fireworks/models/qwen3-8b"}, "nodeCount": 3}
    assert JobResources.of(tiny, ResourceOverrides()) == JobResources(1.0, 0.0, None, 1)
    assert JobResources.of(tiny, ResourceOverrides()).worker_needs() == {"CPU": 1.0}
    derived = JobResources.of(hub, ResourceOverrides())
    assert (derived.gpus, derived.rollout_workers) == (1.0, 3)
    assert derived.worker_needs() == {"CPU": 1.0, "GPU": 1.0}
    assert derived.rollout_worker_needs() == {"CPU": 1.0, "GPU": 1.0}  # three of them
    chosen = JobResources.of(hub, ResourceOverrides(cpus=4.0, gpus=0.0, memory_gb=2.0))
    assert chosen.worker_needs() == {"CPU": 4.0, "memory": 2.0 * 2**30}
    assert chosen.rollout_worker_needs() == {"CPU": 1.0}
    half = JobResources.of(tiny, ResourceOverrides(gpus=0.5))
    assert half.rollout_worker_needs() == {"CPU": 1.0, "GPU": 1.0}  # a worker on a GPU gives each a whole one


@pytest.mark.parametrize("prompts", [1, 7, 16, 64, 100, 512, 1000])
def test_sampling_blocks_cover_every_prompt_once_and_stay_small(prompts):
    bounds = block_bounds(prompts)
    assert [i for start, end in bounds for i in range(start, end)] == list(range(prompts))
    assert max(end - start for start, end in bounds) <= 64
    assert len(bounds) >= min(8, math.ceil(prompts / 16))  # room to split over up to eight workers
    assert all(end - start >= 16 for start, end in bounds[:-1])  # none so small its call overhead dominates


def test_block_seeds_differ_by_block_and_by_call():
    seeds = {block_seed(call, block) for call in (1, 2) for block in range(8)}
    assert len(seeds) == 16
