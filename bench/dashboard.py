"""Dashboard latency with 100 jobs in the store, and the disk the default job's kept rollouts take.

A real `rftlab serve` (queueing jobs, running none) gets 100 jobs of account `local`: one shaped like the default
`rftlab launch` job (1900 training rows in chunks of 8, 8 candidates, 2 epochs: 476 steps of 64 rollouts, and
three eval passes, sampled and greedy, over 100 carved-out rows), and 99 smaller ones (--steps each). Metrics and
rollouts go in through the functions the job worker uses, under the server's default retention. Then each page
and each JSON route a page fetches is requested --repeats times with a logged-in session cookie.

    python bench/dashboard.py [--steps 60] [--repeats 30] [--keep-rollouts all|sample:N]
Last lines: `default_job_rollouts_mb: X` (goal < 20) and `dashboard_slowest_p95_ms: X` (goal < 200).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from rftlab.fireworks.credentials import read_auth_ini
from rftlab.server.rollouts import store_rollouts
from rftlab.server.store import Job, JobMetric, JobRollout, Store, sqlite_url

DEFAULT_STEPS, CANDIDATES, ROWS_PER_STEP, EVAL_ROWS = 476, 8, 8, 100
JOBS = 100
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rollout(rng: random.Random, step: int, group: int, candidate: int) -> dict[str, Any]:
    """A rollout of the bundled arithmetic task as the engine records it (tiny-arith, 8 tokens at most)."""
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    right = rng.random() < 0.4
    text = str(a + b) if right else rng.choice([str(a + b + rng.randint(1, 9)), f"{a}+{b}=", "1 1 1 1"])
    return {
        "row_index": step * ROWS_PER_STEP + group,
        "group": group,
        "candidate": candidate,
        "messages": [
            {"role": "user", "content": f"What is {a}+{b}?"},
            {"role": "assistant", "content": text},
        ],
        "completion_text": text,
        "trained_tokens": [None, len(text)],
        "reward": 1.0 if right else 0.0,
        "valid": True,
        "reason": "exact match" if right else f"expected {a + b}, got {text!r}",
        "error": "",
        "metrics": {},
        "finish_reason": "stop" if right else rng.choice(["stop", "length"]),
        "turns": 1,
        "prompt_tokens": 14,
        "completion_tokens": len(text),
        "advantage": round(rng.uniform(-1.5, 1.5), 4),
    }


def metrics(step: int) -> dict[str, float]:
    return {
        "step": step,
        "epoch": step // 238,
        "reward_mean": 0.18 + 0.3 * step / DEFAULT_STEPS,
        "reward_std": 0.4,
        "loss": 0.01,
        "kl": 0.002,
        "clip_fraction": 0.01,
        "step_seconds": 0.9,
        "gen_seconds": 0.6,
        "update_seconds": 0.25,
        "eval_seconds": 0.05,
    }


def fill_job(store: Store, seq: int, steps: int, rng: random.Random) -> int:
    """Metrics and rollouts for `steps` steps and three eval passes; the bytes of every rollout reported."""
    reported = 0
    with store.session() as session:
        for step in range(1, steps + 1):
            session.add(JobMetric(job_seq=seq, step=step, metrics=metrics(step)))
    for eval_step in (0, steps // 2, steps):
        for _greedy in (False, True):
            batch = [rollout(rng, 0, row, 0) for row in range(EVAL_ROWS)]
            reported += sum(len(json.dumps(r)) for r in batch)
            store_rollouts(store, seq, "eval", eval_step, batch)
    for step in range(1, steps + 1):
        batch = [rollout(rng, step, g, c) for g in range(ROWS_PER_STEP) for c in range(CANDIDATES)]
        reported += sum(len(json.dumps(r)) for r in batch)
        store_rollouts(store, seq, "train", step, batch)
    return reported


def timed(client: httpx.Client, url: str, repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:200]}"
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.95 * len(samples)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60, help="steps of each of the 99 smaller jobs")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--keep-rollouts", default=None, help="the server's retention (default: its default)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="rftlab-bench-dashboard-"))
    home, state = scratch / "home", scratch / "state"
    home.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HOME": str(home), "RFTLAB_HOME": str(state), "HF_HUB_OFFLINE": "1"}
    serve_flags = ["--port", str(port), "--max-running-jobs", "0"]
    if args.keep_rollouts:
        serve_flags += ["--keep-rollouts", args.keep_rollouts]
    server = subprocess.Popen(
        [sys.executable, "-m", "rftlab.server.serve", "--state-dir", str(state), *serve_flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        key = read_auth_ini(home / ".fireworks" / "profiles" / "rftlab-local" / "auth.ini")["api_key"]
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        rows = (ROOT / "src/rftlab/assets/arithmetic/train.jsonl").read_bytes()
        api.post("/v1/accounts/local/datasets", json={"datasetId": "arith", "dataset": {}})
        api.post("/v1/accounts/local/datasets/arith:upload", files={"file": ("train.jsonl", rows)})
        code = (ROOT / "src/rftlab/assets/arithmetic/exact_match.py").read_text()
        snippet = {"language": "python", "fileContents": {"exact_match.py": code}}
        snippet |= {"entryFile": "exact_match.py", "entryFunc": "evaluate"}
        evaluator = {"criteria": [{"type": "CODE_SNIPPETS", "codeSnippets": snippet}]}
        api.post("/v1/accounts/local/evaluatorsV2", json={"evaluatorId": "exact", "evaluator": evaluator})
        for _ in range(600):
            if api.get("/v1/accounts/local/evaluators/exact").json().get("state") == "ACTIVE":
                break
            time.sleep(0.1)
        body = {
            "dataset": "arith",
            "evaluator": "exact",
            "trainingConfig": {"baseModel": "tiny-arith", "epochs": 2},
            "inferenceParameters": {"responseCandidatesCount": CANDIDATES, "maxOutputTokens": 8},
            "chunkSize": ROWS_PER_STEP,
        }
        job_ids = ["default-job"] + [f"sweep-lr-{i:02d}-{i * 7919 % 10**10:010x}" for i in range(1, JOBS)]
        for job_id in job_ids:
            created = api.post(
                "/v1/accounts/local/reinforcementFineTuningJobs",
                params={"reinforcementFineTuningJobId": job_id},
                json=body,
            )
            assert created.status_code == 200, created.text
        store = Store(sqlite_url(str(state / "rftlab.db")))
        with store.reading() as session:
            seqs = dict(session.execute(select(Job.job_id, Job.seq)).all())
        rng = random.Random(0)
        filling = time.perf_counter()
        reported = fill_job(store, seqs["default-job"], DEFAULT_STEPS, rng)
        default_fill_s = time.perf_counter() - filling
        with store.reading() as session:
            kept_bytes = session.scalar(
                select(func.sum(JobRollout.size)).where(JobRollout.job_seq == seqs["default-job"])
            )
            kept_rows = session.scalar(
                select(func.count()).select_from(JobRollout).where(JobRollout.job_seq == seqs["default-job"])
            )
        with sqlite3.connect(state / "rftlab.db") as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db_after_default = sum(p.stat().st_size for p in state.glob("rftlab.db*"))
        for job_id in job_ids[1:]:
            fill_job(store, seqs[job_id], args.steps, rng)
        started = time.perf_counter()
        store_rollouts(
            store,
            seqs["default-job"],
            "train",
            DEFAULT_STEPS + 1,
            [rollout(rng, 0, g, c) for g in range(8) for c in range(8)],
        )
        store_call_ms = (time.perf_counter() - started) * 1000
        with store.reading() as session:
            total_rows = session.scalar(select(func.count()).select_from(JobRollout))
        store.dispose()

        browser = httpx.Client(base_url=base, timeout=60)
        assert browser.post("/dashboard/login", data={"api_key": key}).status_code == 303
        job = "/v1/accounts/local/reinforcementFineTuningJobs/default-job"
        urls = {
            "page /dashboard": "/dashboard",
            "page job": "/dashboard/fine-tuning/reinforcement/default-job",
            "page dataset": "/dashboard/datasets/arith",
            "page evaluator": "/dashboard/evaluators/exact",
            "page sweep": "/dashboard/sweeps/sweep-lr",
            "json jobs list (100 jobs)": "/v1/accounts/local/reinforcementFineTuningJobs?pageSize=200&orderBy=createTime%20desc",
            "json job": job,
            f"json metrics ({DEFAULT_STEPS} steps)": f"{job}/metrics",
            "json rolloutSteps": f"{job}/rolloutSteps",
            "json stateHistory": f"{job}/stateHistory",
            "json rollouts of a step": f"{job}/rollouts?kind=train&step=200&pageSize=200",
            "json dataset rows": "/dashboard/api/datasets/arith/rows",
            "static dashboard.js": "/dashboard/static/dashboard.js",
            "static uPlot.iife.min.js": "/dashboard/static/uPlot.iife.min.js",
        }
        results = {name: timed(browser, url, args.repeats) for name, url in urls.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"store: {JOBS} jobs, {total_rows} kept rollouts (default job {kept_rows}); state in {scratch}")
    print(
        f"default job: {reported / 1e6:.1f} MB of rollouts reported, kept {kept_bytes / 1e6:.2f} MB of JSON"
    )
    print(
        f"  SQLite files after the default job alone: {db_after_default / 1e6:.1f} MB (all tables, indexes)"
    )
    print(f"  filling it through store_rollouts: {default_fill_s:.1f} s for {DEFAULT_STEPS + 6} calls")
    print(f"one store_rollouts call with {total_rows} rollouts in the store: {store_call_ms:.1f} ms")
    print(f"{'request':<40} {'median ms':>10} {'p95 ms':>8}")
    for name, (median, p95) in results.items():
        print(f"{name:<40} {median:>10.1f} {p95:>8.1f}")
    print(f"default_job_rollouts_mb: {db_after_default / 1e6:.1f}")
    print(f"dashboard_slowest_p95_ms: {max(p95 for _, p95 in results.values()):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
