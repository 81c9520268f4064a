"""Sequence packing: rollouts -> micro-batches of at most `batch_tokens` tokens.

Rollouts of one group share their prompt, so a group is laid out as one *unit*: the prompt once, then each
completion, every completion attending to the prompt and to itself only (an explicit attention mask; positions
continue from the prompt's length for every completion). The model then runs each prompt once instead of K
times. Units are packed first-fit-decreasing into rows (several units per row, attention kept within a unit),
and rows are grouped into micro-batches whose rows x width stays within the token budget. Units and rows are at
most `ROW_TOKENS` wide unless a single sequence is longer, which keeps attention's cost (quadratic in the row
width) small next to the linear layers'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

ROW_TOKENS = 256


@dataclass(frozen=True)
class TrainSequence:
    tokens: list[int]
    completion_start: int
    """Index in `tokens` of the first completion token (the ones trained on)."""
    old_logprobs: list[float]
    """One per completion token."""
    advantage: float
    trained_mask: tuple[bool, ...] | None = None
    """One per completion token: False where the model did not produce it (a tool rollout's tool results and
    chat-template glue), which the update skips; None: every completion token is trained."""

    def trained(self) -> list[bool]:
        return list(self.trained_mask) if self.trained_mask is not None else [True] * len(self.old_logprobs)


@dataclass
class MicroBatch:
    input_ids_R_L: torch.Tensor
    position_ids_R_L: torch.Tensor
    attends_R_L_L: torch.Tensor | None
    """attends[r, q, k]: whether token q of row r may attend to token k (same unit, causal, the prompt or its
    own completion); a padding cell attends to itself only. None when every sequence is laid out alone: its
    position ids, restarting at 0, tell where it starts."""
    predict_at_N: torch.Tensor
    """Flat indices into R x L of the positions whose next-token prediction is trained."""
    targets_N: torch.Tensor
    old_logprobs_N: torch.Tensor
    advantages_N: torch.Tensor
    sequence_ids_N: torch.Tensor
    sequence_count: int

    @property
    def token_count(self) -> int:
        return int(self.targets_N.numel())


def truncate(sequence: TrainSequence, max_tokens: int) -> tuple[TrainSequence | None, bool]:
    """The sequence cut to `max_tokens` (None when no completion token is left to train on), and whether it
    was cut."""
    if len(sequence.tokens) <= max_tokens:
        return sequence, False
    kept = max_tokens - sequence.completion_start
    if kept <= 0 or not any(sequence.trained()[:kept]):
        return None, True
    cut = TrainSequence(
        sequence.tokens[:max_tokens],
        sequence.completion_start,
        sequence.old_logprobs[:kept],
        sequence.advantage,
        None if sequence.trained_mask is None else sequence.trained_mask[:kept],
    )
    return cut, True


def pack_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """First-fit decreasing: indices of the sequences in each row, no row longer than `row_tokens` unless a
    single sequence is."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(max(row_tokens, lengths[index]) - lengths[index])
    return rows


def pack(lengths: list[int], batch_tokens: int) -> list[list[list[int]]]:
    """Micro-batches (lists of rows of item indices); each fits `batch_tokens` counting row padding."""
    if not lengths:
        return []
    row_tokens = min(max(ROW_TOKENS, max(lengths)), batch_tokens)
    rows = pack_rows(lengths, row_tokens)
    batches: list[list[list[int]]] = [[]]
    width = 0
    for row in rows:
        row_width = sum(lengths[i] for i in row)
        new_width = max(width, row_width)
        if batches[-1] and new_width * (len(batches[-1]) + 1) > batch_tokens:
            batches.append([])
            new_width = row_width
        batches[-1].append(row)
        width = new_width
    return batches


def _prompt(sequence: TrainSequence) -> tuple[int, ...]:
    return tuple(sequence.tokens[: sequence.completion_start])


def shared_prompt_units(sequences: list[TrainSequence], unit_tokens: int) -> list[list[int]]:
    """Indices of the sequences of each unit: sequences with the same prompt, in order, as many per unit as fit
    in `unit_tokens` (prompt once plus their completions; at least one sequence per unit)."""
    units: list[list[int]] = []
    open_unit: dict[tuple[int, ...], tuple[list[int], int]] = {}
    for index, sequence in enumerate(sequences):
        prompt = _prompt(sequence)
        completion_length = len(sequence.tokens) - sequence.completion_start
        unit, length = open_unit.get(prompt, (None, 0))
        if unit is None or length + completion_length > unit_tokens:
            unit, length = [], len(prompt)
            units.append(unit)
        unit.append(index)
        open_unit[prompt] = (unit, length + completion_length)
    return units


def unit_length(sequences: list[TrainSequence], unit: list[int]) -> int:
    first = sequences[unit[0]]
    return first.completion_start + sum(len(sequences[i].tokens) - first.completion_start for i in unit)


def pack_sequences(
    sequences: list[TrainSequence], batch_tokens: int, share_prompts: bool = True
) -> list[list[list[int]]]:
    """Micro-batches as rows of sequence indices, for `build_microbatch`: each group's sequences sit next to
    each other in a row (sharing their prompt, unless `share_prompts` is off), and each micro-batch fits
    `batch_tokens`."""
    units = shared_prompt_units(sequences, min(ROW_TOKENS, batch_tokens) if share_prompts else 0)
    batches = pack([unit_length(sequences, unit) for unit in units], batch_tokens)
    return [[[i for u in row for i in units[u]] for row in batch] for batch in batches]


def build_microbatch(
    sequences: list[TrainSequence], rows: list[list[int]], pad_id: int, share_prompts: bool = True
) -> MicroBatch:
    """Lay out rows of sequences; consecutive sequences of a row with the same prompt share one copy of it
    (an explicit attention mask keeps each completion to its prompt and itself). Without `share_prompts`, each
    sequence is laid out alone, positions restarting at 0 (padding cells at 0 too): the attention kernel takes
    the sequences from the position ids (FlashAttention's variable-length kernels; transformers builds a block
    mask from them for the others), and no L x L mask is built."""
    layouts = [_row_layout(sequences, row, share_prompts) for row in rows]
    width = max(len(layout.tokens) for layout in layouts)
    input_ids_R_L = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids_R_L = torch.zeros((len(rows), width), dtype=torch.long)
    attends_R_L_L = torch.zeros((len(rows), width, width), dtype=torch.bool) if share_prompts else None
    causal_L_L = torch.ones((width, width), dtype=torch.bool).tril()
    predict_at, targets, old_logprobs, advantages, sequence_ids = [], [], [], [], []
    sequence_count = 0
    for r, (row, layout) in enumerate(zip(rows, layouts, strict=True)):
        used = len(layout.tokens)
        input_ids_R_L[r, :used] = torch.tensor(layout.tokens)
        position_ids_R_L[r, :used] = torch.tensor(layout.positions)
        if attends_R_L_L is not None:
            # Padding cells get units of their own (negative ids), so each attends to itself only.
            unit_L = torch.cat([torch.tensor(layout.units), -1 - torch.arange(width - used)])
            segment_L = torch.cat(
                [torch.tensor(layout.segments), torch.zeros(width - used, dtype=torch.long)]
            )
            same_unit_L_L = unit_L[:, None] == unit_L[None, :]
            visible_L_L = (segment_L[None, :] == 0) | (segment_L[:, None] == segment_L[None, :])
            attends_R_L_L[r] = causal_L_L & same_unit_L_L & visible_L_L
        for index, cells in zip(row, layout.predict_cells, strict=True):
            sequence = sequences[index]
            trained = sequence.trained()
            kept = [i for i, keep in enumerate(trained) if keep]
            completion = sequence.tokens[sequence.completion_start :]
            predict_at.extend(r * width + cells[i] for i in kept)
            targets.extend(completion[i] for i in kept)
            old_logprobs.extend(sequence.old_logprobs[i] for i in kept)
            advantages.extend([sequence.advantage] * len(kept))
            sequence_ids.extend([sequence_count] * len(kept))
            sequence_count += 1
    return MicroBatch(
        input_ids_R_L=input_ids_R_L,
        position_ids_R_L=position_ids_R_L,
        attends_R_L_L=attends_R_L_L,
        predict_at_N=torch.tensor(predict_at, dtype=torch.long),
        targets_N=torch.tensor(targets, dtype=torch.long),
        old_logprobs_N=torch.tensor(old_logprobs, dtype=torch.float32),
        advantages_N=torch.tensor(advantages, dtype=torch.float32),
        sequence_ids_N=torch.tensor(sequence_ids, dtype=torch.long),
        sequence_count=sequence_count,
    )


@dataclass
class _RowLayout:
    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    """0 for a unit's prompt, s > 0 for the s-th completion laid out after it."""
    predict_cells: list[list[int]] = field(default_factory=list)
    """Per sequence: the cells whose next-token prediction is its completion (the first one is the prompt's
    last cell)."""


def _row_layout(sequences: list[TrainSequence], row: list[int], share_prompts: bool = True) -> _RowLayout:
    layout = _RowLayout()
    unit, previous_prompt, segment, prompt_end = -1, None, 0, 0
    for index in row:
        sequence = sequences[index]
        prompt = _prompt(sequence)
        if prompt != previous_prompt or not share_prompts:
            unit, previous_prompt, segment = unit + 1, prompt, 0
            layout.tokens.extend(prompt)
            layout.positions.extend(range(len(prompt)))
            layout.units.extend([unit] * len(prompt))
            layout.segments.extend([0] * len(prompt))
            prompt_end = len(layout.tokens)
        segment += 1
        completion = sequence.tokens[sequence.completion_start :]
        first_cell = len(layout.tokens)
        layout.predict_cells.append([prompt_end - 1, *range(first_cell, first_cell + len(completion) - 1)])
        layout.tokens.extend(completion)
        layout.positions.extend(range(len(prompt), len(prompt) + len(completion)))
        layout.units.extend([unit] * len(completion))
        layout.segments.extend([segment] * len(completion))
    return layout
