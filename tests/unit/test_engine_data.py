"""The evaluation carve-out rule and the seeded chunk order."""

import pytest

from rftlab.engine.api import JobFailed
from rftlab.engine.data import carve_out, carveout_size, check_rows, epoch_chunks, split_rows


@pytest.mark.parametrize(
    ("rows", "held_out"), [(1, 0), (2, 1), (9, 1), (10, 1), (55, 5), (999, 99), (1000, 100), (5000, 100)]
)
def test_carveout_is_ten_percent_capped_at_100_and_at_least_one(rows, held_out):
    assert carveout_size(rows) == held_out


def test_carveout_is_seeded_and_disjoint():
    rows = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(200)]
    train, held = carve_out(rows, seed=3)
    assert len(held) == 20 and len(train) == 180
    assert {id(r) for r in train}.isdisjoint({id(r) for r in held})
    assert carve_out(rows, seed=3) == (train, held)
    assert carve_out(rows, seed=4)[1] != held


def test_an_evaluation_dataset_wins_over_the_carveout():
    rows = [{"messages": []}] * 30
    eval_rows = [{"messages": [{"role": "user", "content": "x"}]}]
    assert split_rows(rows, eval_rows, True, 0) == (rows, eval_rows)
    assert split_rows(rows, None, False, 0) == (rows, [])
    assert len(split_rows(rows, None, True, 0)[1]) == 3


def test_chunks_cover_each_row_once_per_epoch_in_a_seeded_order():
    first = epoch_chunks(25, 8, seed=0, epoch=0)
    assert [len(c) for c in first] == [8, 8, 8, 1]
    assert sorted(i for c in first for i in c) == list(range(25))
    assert epoch_chunks(25, 8, seed=0, epoch=0) == first
    assert epoch_chunks(25, 8, seed=0, epoch=1) != first
    assert [len(c) for c in epoch_chunks(25, -1, seed=0, epoch=0)] == [25]


def test_bad_rows_name_their_line():
    with pytest.raises(JobFailed, match="row 2: 'messages'"):
        check_rows([{"messages": [{"role": "user", "content": "a"}]}, {"prompt": "b"}], "training dataset")
