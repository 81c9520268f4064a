"""The warning a round whose replies mostly hit maxOutputTokens gives: how many, the limit, and the fix."""

from __future__ import annotations

from types import SimpleNamespace

from rftlab.engine.job import cut_off_warning
from rftlab.fireworks.contract import WARNING_PREFIX


def replies(*reasons: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(finish_reason=reason) for reason in reasons]


def test_more_than_half_cut_off_warns_with_the_count_the_limit_and_the_fix():
    warning = cut_off_warning(replies("length", "length", "length", "stop"), 8, step=5)
    assert warning == (
        f"{WARNING_PREFIX}3 of 4 replies in the round ending at step 5 hit maxOutputTokens (8) and were cut off; "
        "raise sampling.max_output_tokens (inferenceParameters.maxOutputTokens)"
    )


def test_half_or_fewer_cut_off_or_turn_capped_replies_do_not_warn():
    assert cut_off_warning(replies("length", "length", "stop", "stop"), 8, step=1) == ""
    assert cut_off_warning(replies("turns", "turns", "turns", "length"), 8, step=1) == ""
