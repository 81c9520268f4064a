"""The update trains only on the tokens the model produced: a tool rollout's tool results and chat-template glue
are laid out (attended to, counted in the token budget) but never predicted, on hand-built transcripts."""

import pytest

from rftlab.engine.evaluator import Score
from rftlab.engine.job import training_sequences
from rftlab.engine.packing import TrainSequence, build_microbatch, pack_sequences, truncate
from rftlab.engine.rollout import Rollout

PROMPT = [1, 2, 3]
# turn 1 (model), tool result + glue (not the model's), turn 2 (model)
TURN_1, GLUE, TURN_2 = [10, 11, 12], [50, 51, 52, 53], [20, 21]
COMPLETION = TURN_1 + GLUE + TURN_2
MASK = [True] * 3 + [False] * 4 + [True] * 2
LOGPROBS = [-0.1, -0.2, -0.3, 0.0, 0.0, 0.0, 0.0, -0.4, -0.5]


def tool_rollout(advantage: float, completion=COMPLETION, mask=MASK, logprobs=LOGPROBS) -> Rollout:
    return Rollout(
        row_index=0,
        candidate=0,
        prompt_ids=PROMPT,
        completion_ids=list(completion),
        logprobs=list(logprobs),
        trained_mask=list(mask),
        messages=[],
        text="",
        finish_reason="stop",
        turns=2,
        score=Score(1.0),
        advantage=advantage,
    )


def test_only_model_tokens_are_targets_while_the_whole_transcript_is_laid_out():
    sequences, truncated = training_sequences([tool_rollout(0.5)], max_tokens=100)
    assert truncated == 0
    batch = build_microbatch(sequences, [[0]], pad_id=0)
    assert batch.input_ids_R_L[0].tolist() == PROMPT + COMPLETION
    assert batch.targets_N.tolist() == TURN_1 + TURN_2
    # each target is predicted from the cell before it: the prompt's last cell, then turn 1, then glue's last
    assert batch.predict_at_N.tolist() == [2, 3, 4, 9, 10]
    assert batch.old_logprobs_N.tolist() == pytest.approx([-0.1, -0.2, -0.3, -0.4, -0.5])
    assert batch.token_count == 5
    assert batch.advantages_N.tolist() == [0.5] * 5


def test_a_group_sharing_its_prompt_keeps_each_rollouts_own_mask():
    single_turn = tool_rollout(-0.5, completion=[30, 31], mask=[True, True], logprobs=[-1.0, -2.0])
    sequences, _ = training_sequences([tool_rollout(0.5), single_turn], max_tokens=100)
    (rows,) = pack_sequences(sequences, batch_tokens=1000)
    batch = build_microbatch(sequences, rows, pad_id=0)
    assert sorted(batch.targets_N.tolist()) == sorted(TURN_1 + TURN_2 + [30, 31])
    assert len(batch.input_ids_R_L[0].nonzero()) == len(PROMPT) + len(COMPLETION) + 2  # the prompt once
    assert sorted(batch.sequence_ids_N.tolist()) == [0, 0, 0, 0, 0, 1, 1]


def test_the_token_budget_counts_tool_tokens_too():
    sequences, _ = training_sequences([tool_rollout(0.5)] * 4, max_tokens=100)
    batches = pack_sequences(sequences, batch_tokens=len(PROMPT) + 2 * len(COMPLETION))
    assert (
        len(batches) == 2
    )  # two transcripts (prompt shared) fill a budget that fits 2 x 9 completion tokens


def test_truncation_keeps_the_mask_and_drops_a_sequence_left_with_glue_only():
    sequence = TrainSequence(PROMPT + COMPLETION, len(PROMPT), LOGPROBS, 1.0, tuple(MASK))
    cut, was_cut = truncate(sequence, max_tokens=len(PROMPT) + 8)
    assert was_cut and cut.trained_mask == tuple(MASK[:8]) and cut.old_logprobs == LOGPROBS[:8]
    assert build_microbatch([cut], [[0]], pad_id=0).targets_N.tolist() == [*TURN_1, 20]
    glue_only = TrainSequence(PROMPT + GLUE, len(PROMPT), [0.0] * 4, 1.0, (False,) * 4)
    assert truncate(glue_only, max_tokens=len(PROMPT) + 2) == (None, True)


def test_a_single_turn_sequence_without_a_mask_trains_every_completion_token():
    sequence = TrainSequence([*PROMPT, 7, 8], len(PROMPT), [-1.0, -2.0], 1.0)
    assert build_microbatch([sequence], [[0]], pad_id=0).targets_N.tolist() == [7, 8]
