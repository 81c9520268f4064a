"""The Ray executor against the local one on this machine, and rollout throughput with 1 vs 2 rollout workers.

1. Jobs per hour: the same small sweep (--jobs jobs of the tiny model, 3 steps an epoch, --epochs epochs) through a real
   `rftlab serve`, once with the local executor (--max-running-jobs equal to the cores) and once with
   `--executor ray` on a one-node Ray cluster with as many CPUs, from the first create to the last job done.
   The ratio ray / local is the executor's overhead (1 = none).
2. Rollout throughput: one chunk's prompts (--rows rows x 8 candidates, 16 tokens) sampled in blocks by one
   rollout worker (the job's process, one torch thread) and by two Ray rollout workers (one thread each), after
   an adapter update, so each timed call includes pushing the new weights. The job's process with every core is
   printed too, as the reference a single worker on this machine gets.

    python bench/ray_executor.py [--jobs 4] [--epochs 1] [--rows 32]
    python bench/ray_executor.py --part sweep|rollouts      (one of the two)
Lines to read: `jobs_per_hour_ratio_ray_over_local: X` and `rollout_speedup_2_over_1_workers: X`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import torch

from rftlab.fireworks.credentials import read_auth_ini
from rftlab.paths import ASSETS_DIR

ROWS = ASSETS_DIR / "arithmetic" / "train.jsonl"
EXACT_MATCH = ASSETS_DIR / "arithmetic" / "exact_match.py"
CORES = len(os.sched_getaffinity(0))
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
TERMINAL = ("JOB_STATE_COMPLETED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EARLY_STOPPED")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rows_jsonl(count: int) -> bytes:
    with ROWS.open("rb") as lines:
        return b"".join(next(lines) for _ in range(count))


def sweep_seconds(root: Path, jobs: int, epochs: int, serve_args: list[str], env: dict[str, str]) -> float:
    """Seconds from the first create to the last of `jobs` small jobs done, through a fresh `rftlab serve`."""
    port, home = free_port(), root / "home"
    home.mkdir(parents=True)
    env = {**os.environ, **env, "HOME": str(home), "HF_HUB_OFFLINE": "1"}
    argv = [
        sys.executable,
        "-m",
        "rftlab.server.serve",
        "--port",
        str(port),
        "--state-dir",
        str(root / "state"),
    ]
    with (root / "server.log").open("ab") as log:
        server = subprocess.Popen([*argv, *serve_args], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {root / 'server.log'}")
            time.sleep(0.3)
        key = read_auth_ini(home / ".fireworks" / "profiles" / "rftlab-local" / "auth.ini")["api_key"]
        with httpx.Client(base_url=f"{base}/v1/accounts/local", timeout=60) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            return run_sweep(client, jobs, epochs)
    finally:
        server.terminate()
        server.wait(timeout=60)


def run_sweep(client: httpx.Client, jobs: int, epochs: int) -> float:
    client.post("/datasets", json={"datasetId": "rows", "dataset": {}}).raise_for_status()
    client.post("/datasets/rows:upload", files={"file": ("rows.jsonl", rows_jsonl(24))}).raise_for_status()
    code = {"exact_match.py": EXACT_MATCH.read_text()}
    snippets = {
        "language": "python",
        "fileContents": code,
        "entryFile": "exact_match.py",
        "entryFunc": "evaluate",
    }
    evaluator = {"criteria": [{"type": "CODE_SNIPPETS", "codeSnippets": snippets}]}
    client.post("/evaluatorsV2", json={"evaluatorId": "exact", "evaluator": evaluator}).raise_for_status()
    started = time.perf_counter()
    names = []
    for index in range(jobs):
        body = {
            "dataset": "accounts/local/datasets/rows",
            "evaluator": "accounts/local/evaluators/exact",
            "trainingConfig": {
                "baseModel": "tiny-arith",
                "learningRate": 0.001 * (index + 1),
                "epochs": epochs,
            },
            "inferenceParameters": {"responseCandidatesCount": 4, "maxOutputTokens": 8, "temperature": 1.0},
            "chunkSize": 8,
        }
        created = client.post(
            "/reinforcementFineTuningJobs", params={"reinforcementFineTuningJobId": f"p{index}"}, json=body
        )
        created.raise_for_status()
        names.append(f"p{index}")
    while True:
        states = [client.get(f"/reinforcementFineTuningJobs/{name}").json()["state"] for name in names]
        if all(state in TERMINAL for state in states):
            break
        time.sleep(0.5)
    elapsed = time.perf_counter() - started
    for name in names:
        print(f"  {name}: {phases(client.get(f'/reinforcementFineTuningJobs/{name}/stateHistory').json())}")
    if not set(states) <= {
        "JOB_STATE_COMPLETED",
        "JOB_STATE_EARLY_STOPPED",
    }:  # the same jobs stop early on both
        raise SystemExit(f"the sweep did not complete: {states}")
    return elapsed


def phases(history: dict) -> str:
    """Seconds the job spent in each state, from its state history (where a sweep's time went)."""
    entries = history["stateHistory"]
    times = [datetime.fromisoformat(entry["time"].replace("Z", "+00:00")) for entry in entries]
    spent = [
        f"{entry['state'].removeprefix('JOB_STATE_').lower()} {(end - begin).total_seconds():.1f} s"
        for entry, begin, end in zip(entries, times, times[1:], strict=False)
    ]
    return ", ".join(spent)


def rollout_throughput(rows: int) -> dict[str, float]:
    """Generated tokens per second of one chunk for each sampler, after an adapter update."""
    import ray

    from rftlab.engine.adapter import attach_adapter
    from rftlab.engine.models import choose_placement, load_base_model
    from rftlab.engine.rollout import render_prompt
    from rftlab.engine.rollout_workers import InProcessBlocks, RayRolloutWorkers
    from rftlab.engine.settings import SamplingParams

    base, tokenizer = load_base_model("tiny-arith", choose_placement())
    policy = attach_adapter(base, 8, None)
    data = [json.loads(line) for line in rows_jsonl(rows).decode().splitlines()]
    prompts = [render_prompt(tokenizer, row) for row in data for _ in range(8)]
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_output_tokens=16)

    def tokens_per_second(sampler, threads: int) -> float:
        torch.set_num_threads(threads)
        list(sampler.generate(prompts, params))  # warm-up (a worker's first call loads its weights)
        with torch.no_grad():
            for name, parameter in policy.named_parameters():
                if "lora_B" in name:
                    parameter.add_(0.01 * torch.randn_like(parameter))
        started = time.perf_counter()
        tokens = sum(len(c.completion_ids) for batch in sampler.generate(prompts, params) for c in batch)
        return tokens / (time.perf_counter() - started)

    result = {"one_worker_1_thread": tokens_per_second(InProcessBlocks(policy, tokenizer), 1)}
    ray.init(num_cpus=CORES, include_dashboard=False, logging_level="WARNING")
    try:
        workers = RayRolloutWorkers(policy, "tiny-arith", count=2)  # each with this process's 1 thread
        result["two_workers_1_thread_each"] = tokens_per_second(workers, 1)
        workers.close()
    finally:
        ray.shutdown()
    result[f"one_worker_{CORES}_threads"] = tokens_per_second(InProcessBlocks(policy, tokenizer), CORES)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each sweep job (3 steps each)")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--part", choices=("all", "sweep", "rollouts"), default="all")
    args = parser.parse_args()
    print(f"machine: {CORES} cores; ray {__import__('ray').__version__}; torch {torch.__version__}")
    root = Path(tempfile.mkdtemp(prefix="rftlab-bench-ray-", dir="/tmp"))
    os.environ.update({**LOOPBACK, "RAY_TMPDIR": str(root / "ray")})
    try:
        if args.part in ("all", "sweep"):
            sweep(root, args.jobs, args.epochs)
        if args.part in ("all", "rollouts"):
            throughput = rollout_throughput(args.rows)
            for name, rate in throughput.items():
                print(f"rollout tokens/s, {name.replace('_', ' ')}: {rate:.0f}")
            speedup = throughput["two_workers_1_thread_each"] / throughput["one_worker_1_thread"]
            print(f"rollout_speedup_2_over_1_workers: {speedup:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def sweep(root: Path, jobs: int, epochs: int) -> None:
    from ray.cluster_utils import Cluster

    local = sweep_seconds(root / "local", jobs, epochs, ["--max-running-jobs", str(CORES)], {})
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": CORES})
    try:
        ray_env = {**LOOPBACK, "RAY_TMPDIR": str(root / "ray")}
        on_ray = sweep_seconds(
            root / "ray-run", jobs, epochs, ["--executor", "ray", "--ray-address", cluster.address], ray_env
        )
    finally:
        cluster.shutdown()
    local_rate, ray_rate = jobs * 3600 / local, jobs * 3600 / on_ray
    print(
        f"sweep of {jobs} jobs of {3 * epochs} steps: local {local:.1f} s ({local_rate:.0f} jobs/h), ray {on_ray:.1f} s ({ray_rate:.0f} jobs/h)"
    )
    print(f"jobs_per_hour_ratio_ray_over_local: {ray_rate / local_rate:.2f}")


if __name__ == "__main__":
    main()
