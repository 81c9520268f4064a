"""Ray's own view of each node of a cluster, read from its control store (GCS) as `ray.available_resources()`
reads it, before it sums the nodes up; and where the rollout workers of running jobs are."""

from __future__ import annotations

from dataclasses import dataclass

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


def cluster_view(driver_pids: dict[str, int], owners: set[tuple[int, str]]) -> ClusterView:
    """The view from this process, connected to the cluster (not through Ray Client: the control store is out of
    its reach). The rollout workers are looked up only for `owners` (job workers as (pid, node id));
    `driver_pids` (Ray job id -> its driver's pid, which never changes) is read again, in place, only when a
    rollout worker belongs to a Ray job it lacks."""
    from ray._private import state

    rollout_workers: dict[tuple[int, str], list[str]] = {}
    if owners:
        actors = [
            actor
            for actor in state.actors(actor_state_name="ALIVE").values()
            if actor["ActorClassName"] == ROLLOUT_WORKER_CLASS
        ]
        if any(actor["JobID"] not in driver_pids for actor in actors):
            driver_pids.update((job["JobID"], job["DriverPid"]) for job in state.jobs())
        for actor in actors:
            owner = (driver_pids.get(actor["JobID"], 0), actor["OwnerAddress"]["NodeID"])
            if owner in owners:
                rollout_workers.setdefault(owner, []).append(actor["Address"]["NodeID"])
    return ClusterView(
        state.available_resources_per_node(), state.total_resources_per_node(), rollout_workers
    )
