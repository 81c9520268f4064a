"""`rftlab serve --executor ray` on a real multi-node Ray cluster on this machine (Ray's own test cluster: one head
without CPUs and one-CPU worker nodes, every process on 127.0.0.1): a sweep spreads over the nodes, a job whose
node dies resumes on another, a job with two rollout workers trains exactly as with one, a job starts only
where one node has room for its worker, and with a storage URL a job runs from a bucket, not the server's state dir,
and resumes on another node from the checkpoint stored there."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import (
    LocalServer,
    add_training_inputs,
    arithmetic_jsonl,
    create_evaluator,
    create_job,
    finished,
    job_metrics,
    job_state,
    small_job,
    upload_dataset,
    wait_for,
)

from rftlab.server.storage import FOLDER_MANIFEST

pytestmark = pytest.mark.slow
ray_cluster_utils = pytest.importorskip(
    "ray.cluster_utils", reason="Ray is not installed: pip install -e '.[local,ray]'"
)

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""Keeps Ray on 127.0.0.1 instead of the machine's external address."""
NODE_LINE = re.compile(r"job worker starting on Ray node ([0-9a-f]+)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[object]:
    # short: Ray's socket paths live under it and must stay under the 107-byte limit of a unix socket path
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    saved = {name: os.environ.get(name) for name in (*LOOPBACK_ENV, "RAY_TMPDIR")}
    os.environ.update({**LOOPBACK_ENV, "RAY_TMPDIR": temp})
    cluster = ray_cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def on_the_cluster(cluster) -> dict[str, str]:
    """The environment of a server whose executor is the test cluster."""
    return {
        **LOOPBACK_ENV,
        "RFTLAB_EXECUTOR": "ray",
        "RAY_ADDRESS": cluster.address,
        "RAY_TMPDIR": os.environ["RAY_TMPDIR"],
    }


@pytest.fixture(scope="module")
def server(cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    with LocalServer.under(
        tmp_path_factory.mktemp("ray-server"), max_running_jobs=100, extra_env=on_the_cluster(cluster)
    ) as server:
        with server.client() as client:
            add_training_inputs(client)
            assert upload_dataset(client, "local", "long", arithmetic_jsonl(64)).status_code == 200
        yield server


def worker_nodes(cluster) -> list[str]:
    return [node.node_id for node in cluster.list_all_nodes() if node is not cluster.head_node]


def nodes_of(server: LocalServer, job_id: str) -> list[str]:
    """The Ray nodes the job's worker started on, in order."""
    log = server.state_dir / "accounts" / "local" / "jobs" / job_id / "worker.log"
    return NODE_LINE.findall(log.read_text()) if log.exists() else []


def rewards(client, job_id: str) -> list[float]:
    return [m["reward_mean"] for m in sorted(job_metrics(client, "local", job_id), key=lambda m: m["step"])]


def kill_node_then_finish(cluster, node_id: str, client, job_id: str) -> tuple[dict, list, list[int]]:
    """Take `node_id` out of the cluster at once (no graceful stop), then wait for the job to end: the job, its
    rewards and its reported steps."""
    victim = next(node for node in cluster.list_all_nodes() if node.node_id == node_id)
    cluster.remove_node(victim, allow_graceful=False)
    job = wait_for(lambda: finished(client, "local", job_id), "the job to finish", 600)
    return job, rewards(client, job_id), sorted(m["step"] for m in job_metrics(client, "local", job_id))


def test_a_sweep_spreads_over_both_nodes_and_completes(cluster, server: LocalServer) -> None:
    jobs = [f"sweep-lr{i}" for i in range(4)]
    with server.client() as client:
        for i, job_id in enumerate(jobs):
            body = small_job("accounts/local/datasets/one-chunk", "accounts/local/evaluators/exact")
            body["trainingConfig"]["learningRate"] = 0.001 * (i + 1)
            create_job(client, "local", job_id, body)
        # one CPU per node and per job: two run while two wait for room, saying so
        wait_for(
            lambda: [
                j
                for j in jobs
                if "waiting for room on the Ray cluster" in job_state(client, "local", j)["status"]["message"]
            ],
            "a job waiting for room",
            120,
        )
        done = {
            job_id: wait_for(lambda j=job_id: finished(client, "local", j), job_id, 600) for job_id in jobs
        }
    assert {job["state"] for job in done.values()} == {"JOB_STATE_COMPLETED"}, done
    used = {node for job_id in jobs for node in nodes_of(server, job_id)}
    assert used == set(worker_nodes(cluster))


def test_a_job_whose_node_dies_resumes_on_the_other_without_losing_a_step(
    cluster, server: LocalServer
) -> None:
    body = small_job("accounts/local/datasets/long", "accounts/local/evaluators/exact", chunkSize=4)
    with server.client() as client:
        create_job(client, "local", "survivor", body)
        wait_for(lambda: len(job_metrics(client, "local", "survivor")) >= 3, "three steps", 300)
        (first_node,) = nodes_of(server, "survivor")
        before = rewards(client, "survivor")
        job, after, steps = kill_node_then_finish(cluster, first_node, client, "survivor")
    cluster.add_node(num_cpus=1)  # the next tests get two worker nodes again
    assert job["state"] == "JOB_STATE_COMPLETED", job
    nodes = nodes_of(server, "survivor")
    assert len(nodes) == 2 and nodes[1] != first_node, nodes
    assert steps == list(range(1, int(json.loads(job["outputMetrics"])["steps"]) + 1))  # each step once
    assert after[: len(before)] == before  # the steps done before the node died are kept as they were


def test_two_rollout_workers_train_exactly_as_one(cluster, server: LocalServer) -> None:
    cluster.add_node(num_cpus=1)  # the job's worker and two rollout workers, one CPU each
    cluster.wait_for_nodes()
    series = {}
    with server.client() as client:
        for workers in (1, 2):
            job_id = f"workers-{workers}"
            body = small_job(
                "accounts/local/datasets/rows", "accounts/local/evaluators/exact", nodeCount=workers
            )
            create_job(client, "local", job_id, body)
            job = wait_for(lambda j=job_id: finished(client, "local", j), job_id, 600)
            assert job["state"] == "JOB_STATE_COMPLETED", job
            series[workers] = rewards(client, job_id)
        log = (server.state_dir / "accounts/local/jobs/workers-2/worker.log").read_text()
    assert len(series[1]) >= 3 and series[1] == series[2]
    assert len(set(series[1])) > 1  # rewards that move: the comparison can fail
    assert "StaleWeights" not in log
    assert re.search(r"rollout workers: 2 Ray actors \(pid \d+ on node \w+, pid \d+ on node \w+\)", log), log


def test_cancel_ends_the_jobs_ray_actors(cluster, server: LocalServer) -> None:
    body = small_job(
        "accounts/local/datasets/long", "accounts/local/evaluators/exact", chunkSize=4, nodeCount=2
    )
    with server.client() as client:
        create_job(client, "local", "cancelled", body)
        wait_for(lambda: job_metrics(client, "local", "cancelled"), "a step", 300)
        assert ray_actor_processes("RolloutWorker") and ray_actor_processes("JobProcess")
        assert (
            client.post("/v1/accounts/local/reinforcementFineTuningJobs/cancelled:cancel").status_code == 200
        )
        job = wait_for(lambda: finished(client, "local", "cancelled"), "the cancel", 120)
        assert job["state"] == "JOB_STATE_CANCELLED", job_state(client, "local", "cancelled")
    wait_for(lambda: not ray_actor_processes("RolloutWorker"), "the rollout workers to end", 60)
    wait_for(lambda: not ray_actor_processes("JobProcess"), "the job's actor to end", 60)


def ray_actor_processes(actor_class: str) -> list[int]:
    """Live processes titled `ray::<actor_class>` (Ray names an actor's process after its class)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if title.startswith(f"ray::{actor_class}") and state != "Z":
            found.append(int(proc.name))
    return found


def test_rollout_workers_sample_with_the_current_weights_only(cluster) -> None:
    """Two rollout-worker actors on the cluster against the job's own process, around an update of the policy:
    each block is sampled with the adapter the policy holds at that call, exactly as the job's process samples."""
    import ray
    import torch

    from rftlab.engine.adapter import attach_adapter
    from rftlab.engine.models import choose_placement, load_base_model
    from rftlab.engine.rollout import render_prompt
    from rftlab.engine.rollout_workers import (
        InProcessBlocks,
        RayRolloutWorkers,
        adapter_weights,
        weights_digest,
    )
    from rftlab.engine.settings import SamplingParams

    torch.set_num_threads(1)  # as each one-CPU worker
    base, tokenizer = load_base_model("tiny-arith", choose_placement())
    policy = attach_adapter(base, 8, None)
    rows = [json.loads(line) for line in arithmetic_jsonl(8).decode().splitlines()]
    prompts = [render_prompt(tokenizer, row) for row in rows for _ in range(4)]
    params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_output_tokens=8)

    def sampled(sampler) -> list[tuple[int, list[int], list[float]]]:
        torch.manual_seed(11)
        return [
            (c.prompt_index, c.completion_ids, c.logprobs)
            for b in sampler.generate(prompts, params)
            for c in b
        ]

    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        workers = RayRolloutWorkers(policy, "tiny-arith", count=2)
        before = sampled(workers)
        assert before == sampled(InProcessBlocks(policy, tokenizer))
        with torch.no_grad():  # an update: the next call must sample with these weights
            for name, parameter in policy.named_parameters():
                if "lora_B" in name:
                    parameter.add_(0.05 * torch.randn_like(parameter))
        updated = weights_digest(adapter_weights(policy))
        after = sampled(workers)
        assert after == sampled(InProcessBlocks(policy, tokenizer)) and after != before
        blocks = len(workers.sampled_with) // 2
        assert {digest for digest, _ in workers.sampled_with[blocks:]} == {updated}
        assert len({pid for _, pid in workers.sampled_with}) == 2  # both workers sampled
        stale = workers.actors[0].generate.remote(prompts[:4], 0, 1, params, "0" * 16)
        with pytest.raises(ray.exceptions.RayTaskError, match="StaleWeights"):
            ray.get(stale)
        workers.close()
    finally:
        ray.shutdown()


def test_the_room_check_finds_rollout_workers_on_their_nodes_and_keeps_room_for_those_to_come(
    cluster,
) -> None:
    """Rollout workers that a job's worker (this process, here) started are counted on their nodes, whether or
    not Ray's view of the nodes shows them yet, and room is kept for those it has yet to start."""
    import ray
    import torch

    from rftlab.engine.adapter import attach_adapter
    from rftlab.engine.models import choose_placement, load_base_model
    from rftlab.engine.rollout_workers import RayRolloutWorkers
    from rftlab.server.executors import JobResources, RayExecutor, RayWorker, ResourceOverrides
    from rftlab.server.ray_view import cluster_view
    from rftlab.server.store import Job

    while len(worker_nodes(cluster)) < 3:  # as the tests before this one leave it
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    torch.set_num_threads(1)
    base, _ = load_base_model("tiny-arith", choose_placement())
    policy = attach_adapter(base, 8, None)
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        wait_for(lambda: ray.available_resources().get("CPU") == 3.0, "the three worker nodes free", 60)
        workers = RayRolloutWorkers(policy, "tiny-arith", count=2)
        me = (os.getpid(), ray.get_runtime_context().get_node_id())
        placed = sorted(node for _, node in ray.get([actor.place.remote() for actor in workers.actors]))
        view = cluster_view({}, {me})
        assert sorted(view.rollout_workers[me]) == placed
        executor = RayExecutor(cluster.address, ResourceOverrides(), 1 << 20)

        def waiting_for(node_count: int, started_by: int) -> str | None:
            """For a job of `node_count`, while this process is the worker (of no CPU) of a running job with
            `started_by` rollout workers."""
            executor._holding = [(RayWorker(ray, None, *me), JobResources(0.0, 0.0, None, started_by))]
            spec = {"trainingConfig": {"baseModel": "tiny-arith"}, "nodeCount": node_count}
            return executor.waiting_for(Job(seq=1, spec=spec))

        assert waiting_for(1, started_by=2) is None  # on the third node
        kept_for_a_third = waiting_for(1, started_by=3) or ""
        assert "the most free on one node is 0 CPU" in kept_for_a_third
        assert (
            "it needs 1 CPU on one node for its worker and 2 rollout workers of 1 CPU on any nodes; "
            "the most free on one node is 1 CPU"
        ) in (waiting_for(2, started_by=2) or "")
        workers.close()
    finally:
        ray.shutdown()


def test_a_job_waits_for_one_node_with_all_its_cpus(cluster, tmp_path: Path) -> None:
    """Worker nodes of one CPU each, all free, do not run a job whose worker needs two: it waits, saying what it
    needs and the most one node has, and starts on the first node with two CPUs that joins."""
    with LocalServer.under(
        tmp_path, max_running_jobs=100, extra_env=on_the_cluster(cluster), extra_args=["--job-cpus", "2"]
    ) as server:
        with server.client() as client:
            add_training_inputs(client)
            create_job(
                client,
                "local",
                "two-cpus",
                small_job("accounts/local/datasets/one-chunk", "accounts/local/evaluators/exact"),
            )

            def message() -> str:
                return job_state(client, "local", "two-cpus")["status"]["message"]

            waiting = "it needs 2 CPU on one node for its worker; the most free on one node is 1 CPU"
            wait_for(lambda: waiting in message(), "the job to wait for room, saying so", 60)
            assert len(worker_nodes(cluster)) >= 2 and not nodes_of(server, "two-cpus")
            big = cluster.add_node(num_cpus=2)
            job = wait_for(lambda: finished(client, "local", "two-cpus"), "the job to finish", 600)
        cluster.remove_node(big)  # the next tests get one-CPU worker nodes again
        assert job["state"] == "JOB_STATE_COMPLETED", job
        assert nodes_of(server, "two-cpus") == [big.node_id]


@pytest.fixture
def bucket_server(cluster, tmp_path: Path) -> Iterator[tuple[LocalServer, Path]]:
    """A Ray server whose job files live in a bucket (`--storage-url file://...`), not in its state dir."""
    bucket = tmp_path / "bucket"
    env = {**on_the_cluster(cluster), "RFTLAB_STORAGE_URL": f"file://{bucket}"}
    with LocalServer.under(tmp_path / "server", max_running_jobs=100, extra_env=env) as server:
        yield server, bucket


def node_cache(node_id: str) -> Path:
    """Where a node of this cluster keeps its copy of the bucket (no RFTLAB_CACHE_DIR here: a temp folder)."""
    return Path(tempfile.gettempdir()) / f"rftlab-cache-{node_id[:16]}"


def test_with_a_storage_url_a_job_runs_from_the_bucket_and_resumes_from_it_on_another_node(
    cluster, bucket_server: tuple[LocalServer, Path]
) -> None:
    server, bucket = bucket_server
    url = f"file://{bucket}"
    job_files = bucket / "accounts/local/jobs/stored"
    # 24 steps: enough that the job is still running when its node dies
    body = small_job(
        "accounts/local/datasets/rows",
        "accounts/local/evaluators/exact",
        chunkSize=4,
        trainingConfig={"epochs": 4},
    )
    with server.client() as client:
        assert upload_dataset(client, "local", "rows", arithmetic_jsonl(24)).status_code == 200
        create_evaluator(client, "local", "exact")
        assert (bucket / "accounts/local/datasets/rows/data.jsonl").read_bytes() == arithmetic_jsonl(24)
        assert (bucket / "accounts/local/evaluators/exact/code/exact_match.py").is_file()
        create_job(client, "local", "stored", body)
        wait_for(
            lambda: (
                len(job_metrics(client, "local", "stored")) >= 2
                and list(job_files.glob(f"checkpoints/step-*/{FOLDER_MANIFEST}"))
            ),
            "two steps and a completely stored checkpoint",
            300,
        )
        (first_node,) = NODE_LINE.findall((job_files / "worker.log").read_text())
        before = rewards(client, "stored")
        job, after, steps = kill_node_then_finish(cluster, first_node, client, "stored")
        shown = [
            client.get(path).json()
            for path in (
                "/v1/accounts/local/reinforcementFineTuningJobs/stored",
                "/v1/accounts/local/models/stored",
                "/v1/accounts/local/datasets/rows",
                "/v1/accounts/local/evaluators/exact",
            )
        ]
    cluster.add_node(num_cpus=1)  # the next tests get two worker nodes again
    log_file = job_files / "worker.log"
    try:
        assert job["state"] == "JOB_STATE_COMPLETED", (job, log_file.read_text()[-3000:])
        # a node copies the log every few seconds and once more when the worker ends
        log = wait_for(
            lambda: (
                (text := log_file.read_text()).count("job worker starting") == 2
                and "resuming from checkpoint" in text
                and text
            ),
            "the second start's log in the bucket",
            30,
        )
        nodes = NODE_LINE.findall(log)
        assert len(nodes) == 2 and nodes[1] != first_node, nodes
        assert steps == list(range(1, int(json.loads(job["outputMetrics"])["steps"]) + 1))  # each step once
        assert after[: len(before)] == before
        assert re.search(
            rf"resuming from checkpoint step-\d+, fetched from {re.escape(url)}/accounts/local/jobs/stored",
            log,
        )
        (checkpoint,) = job_files.glob("checkpoints/step-*")  # the last one, complete
        assert (checkpoint / "COMPLETE").is_file() and (checkpoint / FOLDER_MANIFEST).is_file()
        model = shown[1]
        assert model["adapterPath"] == f"{url}/accounts/local/models/stored"
        assert (bucket / "accounts/local/models/stored/adapter_config.json").is_file()
        # the workers kept their files in their nodes' caches, never in the server's state dir
        assert not list(server.state_dir.glob("accounts/local/jobs/stored/*"))
        assert not (server.state_dir / "accounts/local/models").exists()
        assert list(node_cache(nodes[1]).glob("*/accounts/local/jobs/stored/checkpoints/step-*"))
        text = json.dumps(shown)
        assert "rftlab-cache" not in text and str(server.state_dir) not in text, text
    finally:
        for node in NODE_LINE.findall(log_file.read_text()):
            shutil.rmtree(node_cache(node), ignore_errors=True)
