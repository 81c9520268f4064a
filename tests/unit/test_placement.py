"""Room for a job on a Ray cluster, node by node: its worker needs one node with all its amounts free, its rollout
workers fit on any nodes after it, actors promised to running jobs come first, and Ray's lagging view of a node
never counts more room than its total less what is known to be held there."""

from __future__ import annotations

import pytest

from rftlab.server.placement import Placement, add, describe, largest_room, node_room, place

GIB = float(2**30)


def cpus(*free: float) -> dict[str, dict[str, float]]:
    return {f"n{index}": {"CPU": amount} for index, amount in enumerate(free)}


def test_a_worker_needs_its_cpus_on_one_node_not_over_the_cluster():
    assert place(cpus(1, 1), {"CPU": 2}, {"CPU": 1}, 0) is None  # two CPUs free, but on two nodes
    assert place(cpus(1, 2), {"CPU": 2}, {"CPU": 1}, 0) == Placement("n1", ())


def test_every_amount_of_the_worker_must_be_free_on_the_same_node():
    room = {"a": {"CPU": 4, "GPU": 0}, "b": {"CPU": 0, "GPU": 1}}
    assert place(room, {"CPU": 1, "GPU": 1}, {"CPU": 1}, 0) is None
    room["b"]["CPU"] = 1
    assert place(room, {"CPU": 1, "GPU": 1}, {"CPU": 1}, 0) == Placement("b", ())
    memory = {"a": {"CPU": 2, "memory": 4 * GIB}, "b": {"CPU": 2, "memory": 16 * GIB}}
    assert place(memory, {"CPU": 1, "memory": 8 * GIB}, {"CPU": 1}, 0) == Placement("b", ())


def test_rollout_workers_go_on_any_nodes_after_the_worker():
    assert place(cpus(1, 1, 1), {"CPU": 1}, {"CPU": 1}, 2) == Placement("n0", ("n1", "n2"))
    assert place(cpus(1, 1), {"CPU": 1}, {"CPU": 1}, 2) is None  # three actors, two CPUs
    assert place(cpus(3), {"CPU": 1}, {"CPU": 1}, 2) == Placement("n0", ("n0", "n0"))


def test_the_worker_goes_where_it_leaves_room_for_the_rollout_workers():
    # on the tighter node, the worker would leave one CPU there and room for one rollout worker on the other
    assert place(cpus(2, 3), {"CPU": 1}, {"CPU": 2}, 2) == Placement("n1", ("n0", "n1"))
    assert place(cpus(2, 3), {"CPU": 2}, {"CPU": 2}, 2) is None


def test_actors_promised_to_running_jobs_are_placed_first():
    assert place(cpus(1, 1), {"CPU": 1}, {"CPU": 1}, 0, reserved=[{"CPU": 1}]) is not None
    assert place(cpus(1, 1), {"CPU": 1}, {"CPU": 1}, 0, reserved=[{"CPU": 1}, {"CPU": 1}]) is None
    room = {"g": {"CPU": 1, "GPU": 1}, "c": {"CPU": 1, "GPU": 0}, "d": {"CPU": 1, "GPU": 0}}
    # the promised GPU actor gets the GPU node, whatever the order they were promised in
    assert place(room, {"CPU": 1}, {"CPU": 1}, 0, reserved=[{"CPU": 1}, {"CPU": 1, "GPU": 1}]) == Placement(
        "d", ()
    )
    # an actor that needs no GPU leaves the GPU node to one that does
    assert place(room, {"CPU": 1, "GPU": 1}, {"CPU": 1}, 0, reserved=[{"CPU": 1}]) == Placement("g", ())


def test_a_node_has_no_more_room_than_its_total_less_what_is_held_there():
    total = {"a": {"CPU": 2, "GPU": 1}, "b": {"CPU": 2}}
    lagging = {"a": {"CPU": 2, "GPU": 1}, "b": {"CPU": 1}, "gone": {"CPU": 8}}  # `gone` left the cluster
    held: dict[str, dict[str, float]] = {}
    add(held, "a", {"CPU": 1, "GPU": 1})
    add(held, "a", {"CPU": 0.5})
    add(held, "gone", {"CPU": 1})
    assert node_room(lagging, total, held) == {"a": {"CPU": 0.5, "GPU": 0.0}, "b": {"CPU": 1}}
    caught_up = {"a": {"CPU": 0.5, "GPU": 0.0}, "b": {"CPU": 0.0}}
    assert node_room(caught_up, total, {}) == caught_up  # once Ray's view shows them, nothing twice


def test_fractions_that_sum_to_an_exact_fit_fit():
    room = {"a": {"CPU": 0.3}}
    assert place(room, {"CPU": 0.1}, {"CPU": 0.1}, 2) is not None  # 0.1 + 0.1 + 0.1 > 0.3 in floats


def test_the_largest_room_is_counted_after_promised_actors():
    room = cpus(2, 1)
    assert largest_room(room, [], ["CPU", "GPU"]) == {"CPU": 2, "GPU": 0}
    assert largest_room(room, [{"CPU": 1}, {"CPU": 1}], ["CPU"]) == {"CPU": 1}
    assert largest_room({}, [], ["CPU"]) == {"CPU": 0}


@pytest.mark.parametrize(
    ("amounts", "text"),
    [
        ({"CPU": 2.0, "GPU": 1.0}, "2 CPU, 1 GPU"),
        ({"CPU": 0.5, "memory": 8 * GIB}, "0.5 CPU, 8 GiB memory"),
        ({}, "nothing"),
    ],
)
def test_amounts_read_as_people_count_them(amounts, text):
    assert describe(amounts) == text
