"""Ray's own view of each node of a cluster, read from its control store (GCS) as `ray.available_resources()`
reads it, before it sums the nodes up; and where the rollout workers of running jobs are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rftlab.server.placement import Amounts

ROLLOUT_WORKER_CLASS = "RolloutWorker"
"""The engine's rollout-worker actor class (rftlab.engine.rollout_workers), as Ray's actor table names it."""


@dataclass(frozen=True)
class ClusterView:
    available: dict[str, Amounts]
    """Node id -> its free amounts, as Ray last heard them (a moment behind the actors just placed)."""
    total: dict[str, Amounts]
    """Node id -> its amounts, for the live nodes."""
    rollout_workers: dict[tuple[int, str], list[str]]
    """(pid, node id) of a job worker -> the nodes of the live rollout workers it started."""


def read_view(
    driver_pids: dict[str, int], owners: set[tuple[int, str]]
) -> tuple[ClusterView, dict[str, int]]:
    """The view from a process connected to the cluster; the rollout workers are looked up only for `owners`
    (job workers as (pid, node id)). `driver_pids` (Ray job id -> its driver's pid, which never changes) is read
    again only when a rollout worker belongs to a Ray job it lacks; returned as updated."""
    from ray._private import state

    rollout_workers: dict[tuple[int, str], list[str]] = {}
    if owners:
        actors = [
            actor
            for actor in state.actors(actor_state_name="ALIVE").values()
            if actor["ActorClassName"] == ROLLOUT_WORKER_CLASS
        ]
        if any(actor["JobID"] not in driver_pids for actor in actors):
            driver_pids = {job["JobID"]: job["DriverPid"] for job in state.jobs()}
        for actor in actors:
            owner = (driver_pids.get(actor["JobID"], 0), actor["OwnerAddress"]["NodeID"])
            if owner in owners:
                rollout_workers.setdefault(owner, []).append(actor["Address"]["NodeID"])
    view = ClusterView(
        state.available_resources_per_node(), state.total_resources_per_node(), rollout_workers
    )
    return view, driver_pids


def cluster_view(ray: Any, driver_pids: dict[str, int], owners: set[tuple[int, str]]) -> ClusterView:
    """`read_view` here, or, for a server connected through Ray Client (ray://), in a task on the cluster (the
    control store is not reachable from a client); `driver_pids` is updated in place."""
    from ray.util.client import ray as ray_client

    if ray_client.is_connected():
        task = ray.remote(num_cpus=0)(read_view)
        view, known = ray.get(task.remote(driver_pids, owners))
    else:
        view, known = read_view(driver_pids, owners)
    driver_pids.update(known)
    return view
