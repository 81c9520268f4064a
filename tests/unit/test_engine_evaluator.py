"""The evaluator pool with real worker processes: every way a user's evaluator can misbehave costs one
rollout, never the job, the workers never see the server's secrets, and the pool grows for an evaluator that
waits, never for one that computes or for a busy machine."""

import inspect
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from rftlab.engine.api import EvaluatorCode, JobFailed
from rftlab.engine.evaluator import EvaluatorPool, MalformedAnswer, parse_answer
from rftlab.engine.evaluator_worker import CallClock

EVALUATOR = textwrap.dedent(
    """
    import json, math, os, time

    class Result:
        def __init__(self, score, reason="", is_score_valid=True, metrics=None):
            self.score, self.reason, self.is_score_valid, self.metrics = score, reason, is_score_valid, metrics or {}

    def evaluate(messages, ground_truth=None, **fields):
        reply = messages[-1]["content"]
        print("evaluator chatter on stdout")
        if reply == "float":
            return 0.25
        if reply == "dict":
            return {"score": 1.0, "reason": "fine", "metrics": {"exact": {"score": 1.0}}}
        if reply == "object":
            return Result(0.5, "half", metrics={"partial": Result(0.5)})
        if reply == "fields":
            return {"score": 1.0 if (ground_truth, fields) == ("7", {"tools": ["t"], "level": 3}) else 0.0}
        if reply == "raise":
            raise ValueError("bad reply " + reply)
        if reply == "hang":
            time.sleep(60)
        if reply == "crash":
            os._exit(3)
        if reply == "nan":
            return float("nan")
        if reply == "too-big":
            return 1.5
        if reply == "string":
            return "yes"
        if reply == "declared-invalid":
            return Result(0.0, "could not parse", is_score_valid=False)
        if reply == "env":
            secrets = [k for k in os.environ if k.startswith(("FIREWORKS_", "WANDB_", "RFTLAB_")) or "API_KEY" in k]
            return {"score": 0.0 if secrets else 1.0, "reason": json.dumps(secrets)}
        return 0.0
    """
)


@pytest.fixture
def evaluator_code(tmp_path):
    (tmp_path / "scorer.py").write_text(EVALUATOR)
    return EvaluatorCode(tmp_path, "scorer.py", "evaluate")


def score(pool, reply, ground_truth=None, **fields):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": reply}]
    return pool.submit(messages, ground_truth, fields).result()


def test_accepted_result_shapes_become_scores(evaluator_code):
    with EvaluatorPool(evaluator_code, concurrency=2, timeout_s=10) as pool:
        assert score(pool, "float").value == 0.25
        dict_score = score(pool, "dict")
        assert (dict_score.value, dict_score.reason, dict_score.metrics) == (1.0, "fine", {"exact": 1.0})
        object_score = score(pool, "object")
        assert (object_score.value, object_score.reason, object_score.metrics) == (
            0.5,
            "half",
            {"partial": 0.5},
        )
        assert score(pool, "fields", ground_truth="7", tools=["t"], level=3).value == 1.0


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("raise", "ValueError: bad reply raise (at scorer.py:"),
        ("crash", "the evaluator process died (exit code 3)"),
        ("nan", "outside [0, 1]"),
        ("too-big", "score 1.5, outside [0, 1]"),
        ("string", "expected a float, a dict with 'score'"),
        ("declared-invalid", "marked its score invalid: could not parse"),
    ],
)
def test_misbehaving_calls_become_invalid_rollouts_and_the_pool_keeps_working(evaluator_code, reply, error):
    with EvaluatorPool(evaluator_code, concurrency=1, timeout_s=10) as pool:
        bad = score(pool, reply)
        assert not bad.valid
        assert error in bad.error
        assert score(pool, "float").value == 0.25


def test_a_hanging_call_times_out_without_blocking_the_others(evaluator_code):
    with EvaluatorPool(evaluator_code, concurrency=3, timeout_s=1.0) as pool:
        messages = [{"role": "user", "content": "q"}]
        hanging = pool.submit([*messages, {"role": "assistant", "content": "hang"}], None, {})
        quick = [
            pool.submit([*messages, {"role": "assistant", "content": "float"}], None, {}) for _ in range(6)
        ]
        assert [f.result().value for f in quick] == [0.25] * 6
        timed_out = hanging.result()
        assert not timed_out.valid
        assert "timed out after 1 s" in timed_out.error
        assert score(pool, "dict").value == 1.0


def test_workers_run_without_the_servers_secrets(evaluator_code, monkeypatch):
    for name in ("FIREWORKS_API_KEY", "WANDB_API_KEY", "RFTLAB_SECRET_MARKER", "OPENAI_API_KEY"):
        monkeypatch.setenv(name, "marker-secret-value")
    with EvaluatorPool(evaluator_code, concurrency=1, timeout_s=10) as pool:
        result = score(pool, "env")
    assert json.loads(result.reason) == []
    assert result.value == 1.0
    assert os.environ["FIREWORKS_API_KEY"] == "marker-secret-value"


def test_an_evaluator_that_cannot_be_imported_fails_the_job_with_its_error(tmp_path):
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(
        JobFailed, match="cannot be loaded: ModuleNotFoundError: No module named 'not_a_module"
    ):
        EvaluatorPool(EvaluatorCode(tmp_path, "broken.py", "evaluate"), concurrency=2, timeout_s=5)


def test_a_missing_entry_function_is_named(evaluator_code):
    code = EvaluatorCode(evaluator_code.root, "scorer.py", "grade")
    with pytest.raises(JobFailed, match="defines no function 'grade'"):
        EvaluatorPool(code, concurrency=1, timeout_s=5)


def test_an_answer_without_its_timing_breaks_the_protocol():
    result = {"score": 1.0, "reason": "", "is_score_valid": True, "metrics": {}}
    timing = {"wall_s": 0.1, "cpu_s": 0.02, "runnable_s": 0.01}
    score, parsed = parse_answer(json.dumps({"ok": True, "result": result, "timing": timing}).encode())
    assert (score.value, parsed.waited_s) == (1.0, pytest.approx(0.07))
    for broken in (None, {**timing, "cpu_s": -1.0}, {"wall_s": 0.1}, {**timing, "extra": 1.0}):
        with pytest.raises(MalformedAnswer, match="no valid 'timing'"):
            parse_answer(json.dumps({"ok": True, "result": result, "timing": broken}).encode())


@pytest.fixture
def busy_cores():
    """A busy-loop process per core for the test's duration: the machine as busy as training keeps it."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    yield
    for burner in burners:
        burner.kill()
        burner.wait()


def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_worker_clock_tells_the_evaluators_own_wait_from_computing_and_from_waiting_for_a_core(
    busy_cores,
):
    clock = CallClock()
    start = clock.reading()
    burn(0.06)
    computing = clock.since(start)
    assert computing.cpu_s == pytest.approx(0.06, abs=0.005)
    assert computing.runnable_s > 0.01  # the burners took their turns on the cores ...
    assert computing.waited_s < 0.005  # ... which is not the evaluator waiting
    start = clock.reading()
    time.sleep(0.05)
    assert clock.since(start).waited_s == pytest.approx(0.05, abs=0.01)


def judge_source(body):
    """An evaluator whose call runs `body` (with `burn` at hand) and names the worker that ran it (each worker
    has its own scratch folder as HOME)."""
    return (
        f"import os, time\n\n{inspect.getsource(burn)}\n"
        "def evaluate(messages, ground_truth=None, **fields):\n"
        f"    {body}\n"
        "    return {'score': 1.0, 'reason': os.environ['HOME']}\n"
    )


def grow(tmp_path, body, concurrency, in_flight, rounds, enough=None):
    """A pool of the evaluator whose call runs `body`, after `rounds` rounds of `in_flight` calls at once (or,
    once a round is served by `enough` workers, 2 more): its size and how many workers served the last round."""
    (tmp_path / "judge.py").write_text(judge_source(body))
    code = EvaluatorCode(tmp_path, "judge.py", "evaluate")
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with EvaluatorPool(code, concurrency=concurrency, timeout_s=30) as pool:
        while rounds:
            rounds -= 1
            futures = [pool.submit(messages, None, {}) for _ in range(in_flight)]
            workers = {future.result().reason for future in futures}
            if enough is not None and len(workers) >= enough:
                rounds, enough = min(rounds, 2), None
        return pool.size, len(workers)


def test_an_evaluator_that_waits_gets_a_worker_per_call_in_flight_up_to_the_concurrency(tmp_path):
    size, served = grow(tmp_path, "time.sleep(0.1)", concurrency=12, in_flight=16, rounds=30, enough=12)
    assert (size, served) == (12, 12)


def test_an_evaluator_that_computes_keeps_its_start_size(tmp_path):
    # 16 calls in flight on 8 workers and 2 cores: each call also waits for a core, which earns no worker
    size, served = grow(tmp_path, "burn(0.03)", concurrency=16, in_flight=16, rounds=3)
    assert size == served == EvaluatorPool.INITIAL_WORKERS


def test_an_evaluator_that_computes_and_waits_grows_as_far_as_its_computing_fills_the_cores(tmp_path):
    # 10 ms of CPU and 50 ms of waiting per call: cores x 6 workers keep the cores busy
    wanted = min(16, len(os.sched_getaffinity(0)) * 6)
    size, served = grow(tmp_path, "burn(0.01); time.sleep(0.05)", 16, 16, rounds=30, enough=wanted - 1)
    assert wanted - 1 <= size <= wanted + 1
    assert served >= wanted - 1


def test_a_trivial_evaluator_keeps_its_start_size_while_other_processes_burn_the_cores(tmp_path, busy_cores):
    size, _ = grow(tmp_path, "pass", concurrency=64, in_flight=64, rounds=10)
    assert size == EvaluatorPool.INITIAL_WORKERS


def test_when_no_worker_can_be_started_any_more_calls_fail_with_the_evaluators_error(tmp_path):
    marker = tmp_path / "broken-now"
    (tmp_path / "fragile.py").write_text(
        "import os\n\n"
        f"if os.path.exists({str(marker)!r}):\n"
        "    raise RuntimeError('the evaluator broke after the job started')\n\n"
        "def evaluate(messages, ground_truth=None, **fields):\n"
        "    if messages[-1]['content'] == 'crash':\n"
        "        os._exit(3)\n"
        "    return 1.0\n"
    )
    messages = [{"role": "user", "content": "q"}]
    with EvaluatorPool(
        EvaluatorCode(tmp_path, "fragile.py", "evaluate"), concurrency=1, timeout_s=10
    ) as pool:
        marker.touch()  # the running worker imported the file already; a replacement cannot
        crashed = pool.submit([*messages, {"role": "assistant", "content": "crash"}], None, {}).result()
        assert "died (exit code 3)" in crashed.error
        with pytest.raises(JobFailed, match="broke after the job started"):
            pool.submit([*messages, {"role": "assistant", "content": "fine"}], None, {}).result(timeout=30)
