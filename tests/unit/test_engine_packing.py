"""Sequence packing into token-budget micro-batches, and truncation."""

import pytest

from rftlab.engine.packing import (
    TrainSequence,
    build_microbatch,
    pack,
    pack_rows,
    pack_sequences,
    shared_prompt_units,
    truncate,
)


def test_first_fit_decreasing_fills_rows_before_opening_new_ones():
    rows = pack_rows([5, 3, 4, 2, 6], row_tokens=8)
    # decreasing: 6 (row 0), 5 (row 1), 4 (row 2), 3 -> row 1 (5+3), 2 -> row 0 (6+2)
    assert rows == [[4, 3], [0, 1], [2]]


@pytest.mark.parametrize("budget", [64, 100, 300, 1000])
def test_every_sequence_lands_in_exactly_one_micro_batch_within_the_budget(budget):
    lengths = [(7 * i) % 23 + 10 for i in range(50)]
    batches = pack(lengths, budget)
    placed = sorted(i for batch in batches for row in batch for i in row)
    assert placed == list(range(50))
    for batch in batches:
        width = max(sum(lengths[i] for i in row) for row in batch)
        assert width * len(batch) <= budget


def test_packing_puts_several_sequences_in_a_row_rather_than_padding_each():
    lengths = [20] * 12
    batches = pack(lengths, 10_000)
    assert len(batches) == 1
    assert sum(len(row) > 1 for row in batches[0]) >= 1
    width = max(sum(lengths[i] for i in row) for row in batches[0])
    assert width * len(batches[0]) < 20 * 12 * 2


def test_micro_batch_layout_restarts_positions_and_targets_completion_tokens():
    sequences = [
        TrainSequence([1, 2, 3, 4, 5], 3, [-0.1, -0.2], 1.5),
        TrainSequence([6, 7, 8], 2, [-0.3], -0.5),
    ]
    batch = build_microbatch(sequences, [[0, 1]], pad_id=0)
    assert batch.input_ids_R_L.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8]]
    assert batch.position_ids_R_L.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    # token 4 is predicted at position 2, token 5 at 3, token 8 at 6
    assert batch.predict_at_N.tolist() == [2, 3, 6]
    assert batch.targets_N.tolist() == [4, 5, 8]
    assert batch.old_logprobs_N.tolist() == pytest.approx([-0.1, -0.2, -0.3])
    assert batch.advantages_N.tolist() == [1.5, 1.5, -0.5]
    assert batch.sequence_ids_N.tolist() == [0, 0, 1]


def test_padding_cells_get_their_own_positions():
    sequences = [TrainSequence([1, 2, 3], 1, [-0.1, -0.2], 1.0), TrainSequence([4, 5], 1, [-0.3], 1.0)]
    batch = build_microbatch(sequences, [[0], [1]], pad_id=9)
    assert batch.input_ids_R_L.tolist() == [[1, 2, 3], [4, 5, 9]]
    assert batch.position_ids_R_L.tolist() == [[0, 1, 2], [0, 1, 0]]
    assert batch.predict_at_N.tolist() == [0, 1, 3]


def test_truncation_cuts_the_completion_and_reports_it():
    sequence = TrainSequence([1, 2, 3, 4, 5, 6], 2, [-1.0, -2.0, -3.0, -4.0], 0.5)
    assert truncate(sequence, 6) == (sequence, False)
    cut, was_cut = truncate(sequence, 4)
    assert was_cut
    assert cut.tokens == [1, 2, 3, 4]
    assert cut.old_logprobs == [-1.0, -2.0]
    assert truncate(sequence, 2) == (None, True)


def test_a_groups_sequences_share_one_copy_of_their_prompt():
    sequences = [
        TrainSequence([1, 2, 3, 4, 5], 3, [-0.1, -0.2], 1.0),
        TrainSequence([1, 2, 3, 6], 3, [-0.3], -1.0),
        TrainSequence([7, 8, 9], 2, [-0.4], 0.5),
    ]
    [[row]] = pack_sequences(sequences, 1000)
    batch = build_microbatch(sequences, [row], pad_id=0)
    assert batch.input_ids_R_L.tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9]]
    assert batch.position_ids_R_L.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1, 2]]
    # both completions are first predicted at the shared prompt's last cell (2)
    assert batch.predict_at_N.tolist() == [2, 3, 2, 7]
    assert batch.targets_N.tolist() == [4, 5, 6, 9]
    assert batch.sequence_ids_N.tolist() == [0, 0, 1, 2]
    attends = batch.attends_R_L_L[0]
    assert attends[5].nonzero().flatten().tolist() == [0, 1, 2, 5]  # token 6 sees the prompt and itself
    assert attends[4].nonzero().flatten().tolist() == [0, 1, 2, 3, 4]
    assert attends[8].nonzero().flatten().tolist() == [6, 7, 8]  # the next unit sees nothing before it


def test_units_split_when_a_group_outgrows_the_row_and_padding_sees_only_itself():
    prompt = list(range(1, 11))
    sequences = [TrainSequence([*prompt, 20 + i, 30 + i], 10, [-0.1, -0.2], 1.0) for i in range(4)]
    units = shared_prompt_units(sequences, unit_tokens=15)
    assert units == [[0, 1], [2, 3]]
    batch = build_microbatch(sequences, [[0, 1, 2], [3]], pad_id=0)
    assert batch.input_ids_R_L.shape == (2, 16)
    padding = batch.attends_R_L_L[1, 12:]
    assert padding.nonzero()[:, 1].tolist() == list(range(12, 16))
