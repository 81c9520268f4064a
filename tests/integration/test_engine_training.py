"""Real training of the bundled tiny model: the reward rises, the adapter loads with transformers + peft,
a resumed job equals an uninterrupted one, the same seed gives the same series, and the job ends the way the
evaluator's scores say it should."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rftlab.engine.api import EvaluatorCode, JobFailed, JobInputs
from rftlab.engine.chat import chat
from rftlab.engine.job import run_job
from rftlab.paths import ASSETS_DIR
from rftlab.server.job_spec import settings_for

pytestmark = pytest.mark.slow

ROWS = [json.loads(line) for line in (ASSETS_DIR / "arithmetic/train.jsonl").read_text().splitlines()]
EXACT_MATCH = EvaluatorCode(ASSETS_DIR / "arithmetic", "exact_match.py", "evaluate")
JOB = {
    "trainingConfig": {"epochs": 1, "learningRate": 1e-3, "loraRank": 16, "batchSize": 4096},
    "inferenceParameters": {
        "temperature": 1.0,
        "topP": 1.0,
        "topK": 0,
        "maxOutputTokens": 6,
        "responseCandidatesCount": 8,
    },
    "lossConfig": {"method": "dapo"},
    "chunkSize": 4,
    "evalAutoCarveout": True,
}
TRAIN_ROWS = ROWS[:300]  # 30 carved out for eval, 270 trained on: 68 steps of 4 rows x 8 rollouts
STEPS = 68


class Recorder:
    def __init__(self, stop_after_steps: int | None = None):
        self.steps: list[dict] = []
        self.progress_calls: list[tuple] = []
        self.rollouts_seen: list[tuple[str, int, list[dict]]] = []
        self.notes: list[str] = []
        self.stop_after_steps = stop_after_steps

    def rollouts(self, kind, step, rollouts):
        self.rollouts_seen.append((kind, step, rollouts))

    def step(self, metrics):
        self.steps.append(metrics)

    def progress(self, percent, epoch, step, total_steps, output_tokens):
        self.progress_calls.append((percent, epoch, step, total_steps, output_tokens))

    def should_stop(self):
        return self.stop_after_steps is not None and len(self.steps) >= self.stop_after_steps

    def note(self, message):
        self.notes.append(message)


def inputs(tmp_path, job=JOB, rows=TRAIN_ROWS, evaluator=EXACT_MATCH, seed=0, warm_start=None, name="job"):
    return JobInputs(
        settings=replace(settings_for(job), eval_passes=("sampled", "greedy")),
        train_rows=rows,
        eval_rows=None,
        evaluator=evaluator,
        base_model="tiny-arith",
        warm_start_adapter=warm_start,
        checkpoint_dir=tmp_path / name / "checkpoints",
        output_dir=tmp_path / name / "model",
        seed=seed,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    recorder = Recorder()
    outcome = run_job(inputs(tmp_path), recorder)
    return tmp_path, recorder, outcome


def series(steps, key):
    return [step[key] for step in steps]


def test_training_raises_the_reward_and_reports_every_step(uninterrupted):
    _, recorder, outcome = uninterrupted
    assert outcome.state == "JOB_STATE_COMPLETED"
    assert series(recorder.steps, "step") == list(range(1, STEPS + 1))
    rewards = series(recorder.steps, "reward_mean")
    assert sum(rewards[-20:]) / 20 > sum(rewards[:20]) / 20 + 0.1
    metrics = outcome.final_metrics
    assert metrics["steps"] == STEPS
    assert metrics["eval_reward_greedy_after"] > metrics["eval_reward_greedy_before"]
    for key in ("eval_reward_before", "eval_reward_after", "reward_first", "reward_last"):
        assert 0.0 <= metrics[key] <= 1.0
    last = recorder.steps[-1]
    assert last["eval_reward"] == metrics["eval_reward_after"]
    for key in (
        "loss",
        "kl",
        "clip_fraction",
        "entropy",
        "groups_dropped_frac",
        "tokens_generated",
        "step_seconds",
        "eval_reward_seconds",
    ):
        assert key in last
    for step in recorder.steps:  # a step's phases are parts of it; the held-out eval is timed apart
        assert step["gen_seconds"] + step["eval_seconds"] + step["update_seconds"] <= step["step_seconds"]
    assert recorder.progress_calls[-1][0] == pytest.approx(100.0)


def test_every_step_and_eval_pass_reports_its_rollouts(uninterrupted):
    _, recorder, _ = uninterrupted
    train = [(step, rollouts) for kind, step, rollouts in recorder.rollouts_seen if kind == "train"]
    assert [step for step, _ in train] == list(range(1, STEPS + 1))  # one optimizer step per round here
    by_step = {metrics["step"]: metrics for metrics in recorder.steps}
    for step, rollouts in train:
        rows = 4 if step < STEPS else len(TRAIN_ROWS) - 30 - 4 * (STEPS - 1)  # the last chunk: what is left
        assert [(r["group"], r["candidate"]) for r in rollouts] == [
            (g, k) for g in range(rows) for k in range(8)
        ]
        valid = [r["reward"] for r in rollouts if r["valid"]]
        assert sum(valid) / len(valid) == pytest.approx(by_step[step]["reward_mean"])
        assert all(
            r["messages"][-1] == {"role": "assistant", "content": r["completion_text"]} for r in rollouts
        )
        assert all(  # a single turn: the reply, every token of it trained on
            r["trained_tokens"] == [None] * (len(r["messages"]) - 1) + [r["completion_tokens"]]
            for r in rollouts
        )
    evals = [(step, rollouts) for kind, step, rollouts in recorder.rollouts_seen if kind == "eval"]
    assert [step for step, _ in evals] == [0, STEPS] and all(len(r) == 30 for _, r in evals)


def test_the_output_adapter_loads_with_transformers_and_peft(uninterrupted):
    tmp_path, _, _ = uninterrupted
    adapter_dir = tmp_path / "job" / "model"
    base = AutoModelForCausalLM.from_pretrained(ASSETS_DIR / "tiny-arith")
    model = PeftModel.from_pretrained(base, adapter_dir)
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "the adapter should have moved away from zero"
    assert chat("What is 12+34?", adapter=adapter_dir, max_new_tokens=4).strip().isdigit()


def test_a_resumed_job_continues_exactly_like_an_uninterrupted_one(uninterrupted, tmp_path):
    reference_dir, reference, reference_outcome = uninterrupted
    first = Recorder(stop_after_steps=12)
    assert run_job(inputs(tmp_path), first).state == "JOB_STATE_CANCELLED"
    assert series(first.steps, "step") == list(range(1, 13))
    second = Recorder()
    outcome = run_job(inputs(tmp_path), second)
    assert outcome.state == "JOB_STATE_COMPLETED"
    # the last checkpointed step is reported again on resume, in case it never reached the server
    assert series(second.steps, "step") == list(range(12, STEPS + 1))
    resumed = first.steps + second.steps[1:]
    for key in ("reward_mean", "loss", "entropy", "tokens_generated"):
        assert series(resumed, key) == series(reference.steps, key), key
    timing = {"generation_tokens_per_second"}
    assert {k: v for k, v in outcome.final_metrics.items() if k not in timing} == {
        k: v for k, v in reference_outcome.final_metrics.items() if k not in timing
    }
    resumed_adapter = load_file(tmp_path / "job" / "model" / "adapter_model.safetensors")
    reference_adapter = load_file(reference_dir / "job" / "model" / "adapter_model.safetensors")
    assert resumed_adapter.keys() == reference_adapter.keys()
    assert all(torch.equal(resumed_adapter[k], reference_adapter[k]) for k in reference_adapter)


def test_the_same_seed_gives_the_same_series_and_another_seed_does_not(uninterrupted, tmp_path):
    _, reference, _ = uninterrupted
    same, other = Recorder(stop_after_steps=5), Recorder(stop_after_steps=5)
    run_job(inputs(tmp_path, name="same"), same)
    run_job(inputs(tmp_path, name="other", seed=1), other)
    assert series(same.steps, "reward_mean") == series(reference.steps[:5], "reward_mean")
    assert series(same.steps, "loss") == series(reference.steps[:5], "loss")
    assert series(other.steps, "reward_mean") != series(same.steps, "reward_mean")


SIDE_BY_SIDE_RUN = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from test_engine_training import JOB, ROWS, Recorder, inputs
    from rftlab.engine.job import run_job

    job = {
        "trainingConfig": {"epochs": 1, "learningRate": 3e-4, "loraRank": 16, "batchSize": 4096},
        "inferenceParameters": {**JOB["inferenceParameters"], "maxOutputTokens": 8},
        "lossConfig": {"method": "grpo"},
        "chunkSize": 8,
        "evalAutoCarveout": False,
    }
    recorder = Recorder()
    run_job(inputs(Path(sys.argv[2]), job=job, rows=ROWS[:48]), recorder)
    weights = (Path(sys.argv[2]) / "job/checkpoints").glob("step-*/adapter/adapter_model.safetensors")
    print(json.dumps({
        "loss": [step["loss"] for step in recorder.steps],
        "weights": hashlib.sha256(next(weights).read_bytes()).hexdigest(),
    }))
    """
)


def test_two_runs_side_by_side_on_every_core_give_identical_weights(tmp_path):
    """Separate processes competing for the cores, as two launches of the same job would: the same seed must still
    give the same numbers. (The backward pass of tensor indexing accumulated in an order that depended on how the
    threads were scheduled.)"""
    # torch's default threads (one per core): an explicit OMP_NUM_THREADS happens to make the drift rarer
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", SIDE_BY_SIDE_RUN, os.path.dirname(__file__), str(tmp_path / name)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for name in ("first", "second")
    ]
    first, second = (json.loads(run.communicate(timeout=300)[0]) for run in runs)
    assert len(first["loss"]) == 6
    assert first == second


def test_warm_start_begins_where_the_earlier_adapter_ended(uninterrupted, tmp_path):
    reference_dir, _, reference_outcome = uninterrupted
    recorder = Recorder(stop_after_steps=0)
    outcome = run_job(inputs(tmp_path, warm_start=reference_dir / "job" / "model"), recorder)
    assert outcome.state == "JOB_STATE_CANCELLED"
    before = outcome.final_metrics
    assert before["eval_reward_greedy_before"] == reference_outcome.final_metrics["eval_reward_greedy_after"]
    assert before["eval_reward_before"] == reference_outcome.final_metrics["eval_reward_after"]


def write_evaluator(tmp_path, body):
    folder = tmp_path / "evaluator"
    folder.mkdir()
    (folder / "main.py").write_text(textwrap.dedent(body))
    return EvaluatorCode(folder, "main.py", "evaluate")


def test_an_epoch_without_any_reward_difference_stops_the_job_early(tmp_path):
    constant = write_evaluator(tmp_path, "def evaluate(messages, ground_truth=None, **kw):\n    return 1.0\n")
    recorder = Recorder()
    outcome = run_job(
        inputs(tmp_path, rows=ROWS[:20], evaluator=constant, job={**JOB, "chunkSize": 8}), recorder
    )
    assert outcome.state == "JOB_STATE_EARLY_STOPPED"
    assert "no group with different rewards" in outcome.message
    assert series(recorder.steps, "groups_dropped_frac") == [1.0, 1.0, 1.0]
    assert (tmp_path / "job" / "model" / "adapter_config.json").exists()
    again = Recorder()
    resumed = run_job(
        inputs(tmp_path, rows=ROWS[:20], evaluator=constant, job={**JOB, "chunkSize": 8}), again
    )
    assert resumed.state == "JOB_STATE_EARLY_STOPPED", "a resumed job must not train past its early stop"
    assert series(again.steps, "step") == [3]


def test_an_evaluator_failing_on_most_rollouts_fails_the_job_with_its_own_error(tmp_path):
    failing = write_evaluator(
        tmp_path,
        """
        def evaluate(messages, ground_truth=None, **kw):
            return {"score": 1 / 0}
        """,
    )
    with pytest.raises(
        JobFailed, match=r"failed on most rollouts .*ZeroDivisionError: division by zero \(at main.py:3"
    ):
        run_job(inputs(tmp_path, rows=ROWS[:20], evaluator=failing), Recorder())
