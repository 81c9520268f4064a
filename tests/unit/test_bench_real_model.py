"""bench/real_model.py: skipped with a message where the model is not prepared; both sides get the short-sums
task's rows, its held-out rows and its evaluator. No model is loaded, no timing asserted."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import engine_vs_trl
import real_model
from _common import TASKS


def test_the_benchmark_is_skipped_with_the_fix_when_the_model_is_not_prepared(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RFTLAB_MODELS_DIR", str(tmp_path))
    assert real_model.main([]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "scripts/prepare_real_model.py" in out


def test_both_sides_train_on_the_tasks_rows_and_hold_out_its_eval_rows():
    args = engine_vs_trl.parse_args(
        ["--task", "short_sums", "--steps", "3", "--prompts", "8", "--eval-rows", "64"]
    )
    train, held_out = engine_vs_trl.split(args)
    assert len(train) == 24 and len(held_out) == 64
    assert not {r["messages"][0]["content"] for r in train} & {r["messages"][0]["content"] for r in held_out}
    assert args.model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_the_in_process_evaluator_is_the_tasks_file():
    evaluate = TASKS["short_sums"].evaluate_function()
    reply = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}]
    assert evaluate(reply, ground_truth="5")["score"] == 1.0
    reply[-1]["content"] = "The answer is 5."
    assert evaluate(reply, ground_truth="5")["score"] == 0.5
    reply[-1]["content"] = "0 + 5 = 6"
    assert evaluate(reply, ground_truth="5")["score"] == 0.0
