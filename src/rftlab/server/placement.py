"""Whether a job fits on a Ray cluster, node by node (pure arithmetic over amounts such as {"CPU": 2, "GPU": 1,
"memory": bytes}, Ray's own resource names).

A job's worker is one Ray actor, so it needs one node with all its amounts free; its rollout workers are actors of
their own that may go on any nodes. The cluster's total free amounts say nothing about that: two nodes with one
free CPU each do not run a two-CPU worker, and Ray would leave it waiting in its queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Amounts = dict[str, float]
"""Resource name -> amount, as Ray counts them ("memory" in bytes)."""
SLACK = 1e-9
"""Ray counts fractional resources in 1/10000 units; floats summed here may miss an exact fit by a rounding."""


def node_room(
    available: dict[str, Amounts], total: dict[str, Amounts], held: dict[str, Amounts]
) -> dict[str, Amounts]:
    """The free amounts of each live node (those in `total`): what Ray's view says is available there, but never
    more than its total less what `held` says is on it, since Ray's view lags actors placed a moment ago."""
    return {
        node: {
            name: min(available.get(node, {}).get(name, 0.0), amount - held.get(node, {}).get(name, 0.0))
            for name, amount in node_total.items()
        }
        for node, node_total in total.items()
    }


def add(amounts: dict[str, Amounts], node: str, more: Amounts) -> None:
    """Count `more` as held on `node`."""
    on_node = amounts.setdefault(node, {})
    for name, amount in more.items():
        on_node[name] = on_node.get(name, 0.0) + amount


def fits(room: Amounts, needs: Amounts) -> bool:
    return all(room.get(name, 0.0) + SLACK >= amount for name, amount in needs.items() if amount > 0)


def taken(room: Amounts, needs: Amounts) -> Amounts:
    return {name: amount - needs.get(name, 0.0) for name, amount in room.items()}


def tightest_first(room: dict[str, Amounts]) -> list[str]:
    """The nodes, those with the fewest GPUs free first, then CPUs, then memory: an actor that needs no GPU goes
    where it leaves the GPUs free for one that does."""
    return sorted(room, key=lambda node: [room[node].get(name, 0.0) for name in ("GPU", "CPU", "memory")])


def pack(room: dict[str, Amounts], actors: Iterable[Amounts]) -> dict[str, Amounts] | None:
    """The room left once each of `actors` has a node (biggest first, each on the tightest node with room for
    it); None when one finds none."""
    left = dict(room)
    order = sorted(actors, key=lambda needs: [needs.get(name, 0.0) for name in ("GPU", "CPU", "memory")])
    for needs in reversed(order):
        node = next((node for node in tightest_first(left) if fits(left[node], needs)), None)
        if node is None:
            return None
        left[node] = taken(left[node], needs)
    return left


@dataclass(frozen=True)
class Placement:
    worker: str
    """The node with room for the job's worker."""
    rollout_workers: tuple[str, ...]
    """A node with room for each of its rollout workers, in order."""


def place(
    room: dict[str, Amounts],
    worker: Amounts,
    rollout_worker: Amounts,
    rollout_workers: int,
    reserved: Sequence[Amounts] = (),
) -> Placement | None:
    """Nodes for a job's worker (all of `worker` on one node) and its `rollout_workers` actors of `rollout_worker`
    each, in the room left once `reserved` (actors already promised to running jobs) have theirs; None when they
    do not all fit. Each node with room for the worker is tried in turn, the tightest first: the rollout workers
    are all alike, so filling the other nodes' room with as many as each holds finds them room if any placement
    does."""
    left = pack(room, reserved)
    if left is None:
        return None
    for node in [node for node in tightest_first(left) if fits(left[node], worker)]:
        rest = {**left, node: taken(left[node], worker)}
        nodes: list[str] = []
        for other, free in rest.items():
            while len(nodes) < rollout_workers and fits(free, rollout_worker):
                nodes.append(other)
                free = taken(free, rollout_worker)
        if len(nodes) == rollout_workers:
            return Placement(node, tuple(nodes))
    return None


def largest_room(room: dict[str, Amounts], reserved: Sequence[Amounts], names: Iterable[str]) -> Amounts:
    """The most of each of `names` free on any one node, once `reserved` have their room (as `place` counts)."""
    left = pack(room, reserved) or room
    return {name: max([0.0, *(free.get(name, 0.0) for free in left.values())]) for name in names}


def describe(amounts: Amounts) -> str:
    """For example 2 CPU, 1 GPU, 8 GiB memory ("nothing" for no amounts)."""
    parts = [
        f"{amount / 2**30:.3g} GiB memory" if name == "memory" else f"{amount:g} {name}"
        for name, amount in amounts.items()
    ]
    return ", ".join(parts) or "nothing"
