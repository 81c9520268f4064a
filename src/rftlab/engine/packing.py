"""Sequence packing: rollouts -> micro-batches of at most `batch_tokens` tokens.

Sequences are packed first-fit-decreasing into rows (several sequences per row, each with its own position ids
restarting at 0, so attention stays within a sequence), and rows are grouped into micro-batches whose
rows x width stays within the token budget. Rows are at most `ROW_TOKENS` wide unless a sequence is longer,
which keeps attention's cost (quadratic in the row width) small next to the linear layers'.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass
class MicroBatch:
    input_ids_R_L: torch.Tensor
    position_ids_R_L: torch.Tensor
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
    if kept <= 0:
        return None, True
    cut = TrainSequence(
        sequence.tokens[:max_tokens],
        sequence.completion_start,
        sequence.old_logprobs[:kept],
        sequence.advantage,
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
    """Micro-batches (lists of rows of sequence indices); each fits `batch_tokens` counting row padding."""
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


def build_microbatch(sequences: list[TrainSequence], rows: list[list[int]], pad_id: int) -> MicroBatch:
    width = max(sum(len(sequences[i].tokens) for i in row) for row in rows)
    input_ids_R_L = torch.full((len(rows), width), pad_id, dtype=torch.long)
    position_ids_R_L = torch.zeros((len(rows), width), dtype=torch.long)
    predict_at, targets, old_logprobs, advantages, sequence_ids = [], [], [], [], []
    sequence_count = 0
    for r, row in enumerate(rows):
        offset = 0
        for i in row:
            sequence = sequences[i]
            length = len(sequence.tokens)
            input_ids_R_L[r, offset : offset + length] = torch.tensor(sequence.tokens)
            position_ids_R_L[r, offset : offset + length] = torch.arange(length)
            completion_length = length - sequence.completion_start
            first = r * width + offset + sequence.completion_start - 1
            predict_at.extend(range(first, first + completion_length))
            targets.extend(sequence.tokens[sequence.completion_start :])
            old_logprobs.extend(sequence.old_logprobs)
            advantages.extend([sequence.advantage] * completion_length)
            sequence_ids.extend([sequence_count] * completion_length)
            sequence_count += 1
            offset += length
        # Padding forms one more "sequence" (positions from 0) so it never attends into a real one.
        position_ids_R_L[r, offset:] = torch.arange(width - offset)
    return MicroBatch(
        input_ids_R_L=input_ids_R_L,
        position_ids_R_L=position_ids_R_L,
        predict_at_N=torch.tensor(predict_at, dtype=torch.long),
        targets_N=torch.tensor(targets, dtype=torch.long),
        old_logprobs_N=torch.tensor(old_logprobs, dtype=torch.float32),
        advantages_N=torch.tensor(advantages, dtype=torch.float32),
        sequence_ids_N=torch.tensor(sequence_ids, dtype=torch.long),
        sequence_count=sequence_count,
    )
