"""The bundled exact_match evaluator: the example users copy, so its behaviour is pinned here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from rftlab.paths import ASSETS_DIR

EVALUATOR_PATH = ASSETS_DIR / "arithmetic" / "exact_match.py"


@pytest.fixture(scope="module")
def evaluate():
    spec = importlib.util.spec_from_file_location("exact_match", EVALUATOR_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.evaluate


def conversation(reply):
    return [{"role": "user", "content": "What is 23+45?"}, {"role": "assistant", "content": reply}]


def test_right_answer_scores_one(evaluate):
    result = evaluate(conversation("68"), ground_truth="68")
    assert result["score"] == 1.0
    assert "68" in result["reason"]


@pytest.mark.parametrize("reply", ["67", "168", "6 8", "", "68.0", "The answer is 68"])
def test_wrong_answer_scores_zero(evaluate, reply):
    result = evaluate(conversation(reply), ground_truth="68")
    assert result["score"] == 0.0
    assert "68" in result["reason"]


def test_surrounding_whitespace_is_ignored(evaluate):
    assert evaluate(conversation("  68\n"), ground_truth=" 68 ")["score"] == 1.0


def test_numeric_ground_truth_is_compared_as_text(evaluate):
    assert evaluate(conversation("68"), ground_truth=68)["score"] == 1.0


def test_missing_ground_truth_scores_zero_with_reason(evaluate):
    result = evaluate(conversation("68"))
    assert result["score"] == 0.0
    assert "ground_truth" in result["reason"]


def test_conversation_without_assistant_reply_scores_zero(evaluate):
    result = evaluate([{"role": "user", "content": "What is 23+45?"}], ground_truth="68")
    assert result["score"] == 0.0
    assert "assistant" in result["reason"]


def test_extra_row_fields_are_accepted(evaluate):
    assert evaluate(conversation("68"), ground_truth="68", difficulty="easy")["score"] == 1.0


def test_runs_with_the_standard_library_only():
    """-S leaves site-packages out: the evaluator must not need anything installed."""
    program = (
        "import json, runpy, sys; "
        f"evaluate = runpy.run_path({str(EVALUATOR_PATH)!r})['evaluate']; "
        "print(json.dumps(evaluate([{'role': 'assistant', 'content': '68'}], ground_truth='68')))"
    )
    completed = subprocess.run(
        [sys.executable, "-S", "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(completed.stdout)["score"] == 1.0
