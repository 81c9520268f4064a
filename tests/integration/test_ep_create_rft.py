"""Fireworks' own RFT client, eval-protocol's `ep create rft`, against a real `rftlab serve`: the dataset upload
(rows rewritten as EvaluationRow JSON), the FIREWORKS_API_KEY secret, the evaluator as a tar.gz through
evaluatorsV2 + :getUploadEndpoint + PUT + :validateUpload, built with its requirements.txt (eval-protocol) and
polled until ACTIVE, then the job, trained to COMPLETED with rewards from the `@evaluation_test` function.

Slow: eval-protocol is installed with uv into a venv of the test's own, and again (from the package index, inside
the sandbox, with a download cache of the build's own) into the evaluator's environment on the server. Skipped
when it cannot be installed (no package index reachable).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_harness import LocalServer, arithmetic_jsonl, finished, wait_for
from uv import find_uv_bin

pytestmark = pytest.mark.slow

EVAL_PROTOCOL = "eval-protocol==0.3.33"
"""The version whose requests the findings and reference §9 describe."""
A = "/v1/accounts/local"
TEST_ARITH = """
from eval_protocol.models import EvaluateResult, EvaluationRow, MetricResult
from eval_protocol.pytest import SingleTurnRolloutProcessor, evaluation_test


@evaluation_test(
    input_dataset=["arith.jsonl"],
    rollout_processor=SingleTurnRolloutProcessor(),
    completion_params=[{"model": "fireworks_ai/accounts/fireworks/models/qwen3-0p6b"}],
    mode="pointwise",
)
def test_arith(row: EvaluationRow) -> EvaluationRow:
    answer = (row.messages[-1].content or "").strip()
    exact = answer == str(row.ground_truth).strip()
    row.evaluation_result = EvaluateResult(
        score=1.0 if exact else 0.0,
        reason=f"ep-scored: {answer!r} vs {row.ground_truth!r} (row {row.input_metadata.row_id or 'n/a'})",
        metrics={"exact": MetricResult(score=float(exact), reason="answer")},
    )
    return row
"""


def uv_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "UV_CACHE_DIR": str(cache)}


@pytest.fixture(scope="module")
def uv_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(scope="module")
def ep(tmp_path_factory, uv_cache) -> Path:
    """The `ep` command of a fresh venv holding eval-protocol."""
    venv = tmp_path_factory.mktemp("ep") / "venv"
    uv = find_uv_bin()
    created = subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(venv)], capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    installed = subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), EVAL_PROTOCOL],
        env=uv_env(uv_cache),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if installed.returncode != 0:
        pytest.skip(f"cannot install {EVAL_PROTOCOL}: {installed.stderr.strip().splitlines()[-1:]}")
    return venv / "bin" / "ep"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    with LocalServer.under(root) as running:
        yield running


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "test_arith.py").write_text(TEST_ARITH)
    (tmp_path / "requirements.txt").write_text(EVAL_PROTOCOL + "\n")
    (tmp_path / "arith.jsonl").write_bytes(arithmetic_jsonl(16))
    return tmp_path


def run_ep(ep: Path, server: LocalServer, project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": f"{ep.parent}:{os.environ['PATH']}",
        "HOME": str(server.home),
        "FIREWORKS_API_KEY": server.local_key(),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return subprocess.run(
        [str(ep), "--server", server.base_url, *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_ep_create_rft_trains_a_job_scored_by_the_evaluation_test(ep, server, project):
    started = time.monotonic()
    result = run_ep(
        ep,
        server,
        project,
        "create",
        "rft",
        "--yes",
        "--skip-validation",
        "--base-model",
        "tiny-arith",
        "--output-model",
        "ep-out",
        "--epochs",
        "1",
        # a quick job on the tiny model: 16 rows in two chunks, 4 candidates of at most 8 tokens
        "--chunk-size",
        "8",
        "--response-candidates-count",
        "4",
        "--max-output-tokens",
        "8",
        "--learning-rate",
        "0.002",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    ep_seconds = time.monotonic() - started
    assert "Failed to create FIREWORKS_API_KEY" not in output
    job_name = re.search(r"Created Reinforcement Fine-tuning Job: (\S+)", output).group(1)
    job_id = job_name.rsplit("/", 1)[1]

    with server.client() as client:
        secret = client.get(f"{A}/secrets/fireworks-api-key").json()
        assert secret == {"name": "accounts/local/secrets/fireworks-api-key", "keyName": "FIREWORKS_API_KEY"}
        evaluator = client.get(f"{A}/evaluators/test-arith-test-arith").json()
        assert (evaluator["state"], evaluator["entryPoint"]) == ("ACTIVE", "test_arith.py::test_arith")

        job = wait_for(
            lambda: finished(client, "local", job_id), "the job to finish", timeout_s=900, every_s=2
        )
        assert job["state"] == "JOB_STATE_COMPLETED", job["status"]
        rollouts = client.get(f"/v1/accounts/local/reinforcementFineTuningJobs/{job_id}/rollouts").json()
        reasons = [rollout.get("reason", "") for rollout in rollouts["rollouts"]]
        assert reasons and all(reason.startswith("ep-scored: ") for reason in reasons), reasons[:3]

        for link in re.findall(r"http://127\.0\.0\.1:\d+(/dashboard/\S+)", output):
            assert httpx.get(server.base_url + link).status_code != 404, link
    assert server.local_key() not in (server.state_dir / "rftlab.db").read_bytes().decode(errors="replace")
    print(f"ep create rft: {ep_seconds:.1f} s to the job; job finished {time.monotonic() - started:.1f} s in")
