"""Sampling split over rollout workers: the `Sampler` the engine uses when a job runs on a Ray cluster.

Each `generate` call cuts its prompts into fixed blocks (their size depends on the number of prompts only) and
gives block i a seed derived from one draw of the job's torch generator and i. A block is sampled alone, as one
Hugging Face batch under its own seed, so what it yields does not depend on which worker samples it nor on how
many there are: the same job seed gives the same completions, hence the same reward series, with 1 or N workers.
(Sampling outside this module batches differently, so its series differs from these.)

With one worker the blocks are sampled in the job's own process; on a GPU one worker samples as any job does
(with vLLM where it is installed), so there its series differs from N workers'. With two or more, each worker is
a Ray actor holding its own copy of the base model with the job's LoRA config, sampling with Hugging Face
`generate`; the update stays in the job's process. Before the blocks of a call go out, the policy's adapter
weights are compared by digest with those the workers hold; if they changed, they are put in Ray's object store
once and loaded by every worker, and the call waits until all have them. Every block call carries the digest it
must be sampled with: a worker holding other weights refuses it (`StaleWeights`), and each answer names the
digest it used, checked here again.

The workers are owned by the job's process: when it ends (finished, cancelled, killed, or its node died) Ray ends
them too. The server reads the environment names below without importing torch.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
from collections.abc import Iterator
from typing import Any

ROLLOUT_WORKERS_ENV = "RFTLAB_ROLLOUT_WORKERS"
"""Set (to N >= 1) by the Ray executor: the job samples through N rollout workers."""
RAY_ADDRESS_ENV = "RAY_ADDRESS"
MAX_BLOCK_PROMPTS = 64
MIN_BLOCK_PROMPTS = 16
"""Blocks smaller than this cost more in per-call overhead than spreading them over workers gains."""
BLOCKS_PER_CALL = 8
"""A call is cut into this many blocks (fewer when prompts are few, more when blocks would exceed the max)."""
SEED_BOUND = 2**31 - 1
WORKER_CPUS = 1.0


def block_bounds(prompts: int) -> list[tuple[int, int]]:
    size = min(MAX_BLOCK_PROMPTS, max(MIN_BLOCK_PROMPTS, math.ceil(prompts / BLOCKS_PER_CALL)))
    return [(start, min(prompts, start + size)) for start in range(0, prompts, size)]


def block_seed(call_seed: int, block: int) -> int:
    return (call_seed * 1_000_003 + block) % SEED_BOUND


def draw_call_seed() -> int:
    """One draw from torch's CPU generator: seeded by the job, restored with its checkpoints."""
    import torch

    return int(torch.randint(0, SEED_BOUND, (1,)))


def sample_block(sampler: Any, prompts: list[list[int]], start: int, seed: int, params: Any) -> list[Any]:
    """The completions of one block (`prompts` from index `start` of the call), sampled under `seed` only."""
    import torch

    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        completions = [c for batch in sampler.generate(prompts, params) for c in batch]
    for completion in completions:
        completion.prompt_index += start
    return completions


def adapter_weights(policy: Any) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(policy, save_embedding_layers=False)
    return {name: tensor.detach().cpu() for name, tensor in state.items()}


def weights_digest(weights: dict[str, Any]) -> str:
    import torch

    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class StaleWeights(RuntimeError):
    """A rollout worker was asked to sample with weights it does not hold."""


class InProcessBlocks:
    """One rollout worker: the blocks sampled in the job's own process, on the policy itself."""

    def __init__(self, policy: Any, tokenizer: Any) -> None:
        from rftlab.engine.rollout import HFSampler

        self.sampler = HFSampler(policy, tokenizer, batch_size=MAX_BLOCK_PROMPTS)

    def generate(self, prompts: list[list[int]], params: Any) -> Iterator[list[Any]]:
        call_seed = draw_call_seed()
        for index, (start, end) in enumerate(block_bounds(len(prompts))):
            yield sample_block(self.sampler, prompts[start:end], start, block_seed(call_seed, index), params)


class RolloutWorker:
    """A Ray actor: the base model with the job's LoRA config, sampling the blocks it is given."""

    def __init__(self, base_model: str, lora_config: Any, threads: int) -> None:
        import torch
        from peft import get_peft_model

        from rftlab.engine.models import choose_placement, load_base_model, peft_deprecation_silenced
        from rftlab.engine.rollout import HFSampler

        torch.set_num_threads(threads)
        base, tokenizer = load_base_model(base_model, choose_placement())
        with peft_deprecation_silenced():
            self.model = get_peft_model(base, lora_config)
        self.sampler = HFSampler(self.model, tokenizer, batch_size=MAX_BLOCK_PROMPTS)
        self.digest: str | None = None

    def place(self) -> tuple[int, str]:
        """This worker's pid and Ray node id."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def load(self, weights: dict[str, Any], digest: str) -> str:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, weights)
        self.digest = weights_digest(adapter_weights(self.model))
        if self.digest != digest:
            raise StaleWeights(f"the weights loaded have digest {self.digest}, not the {digest} sent")
        return self.digest

    def generate(
        self, prompts: list[list[int]], start: int, seed: int, params: Any, digest: str
    ) -> tuple[str, int, list[Any]]:
        """(the digest of the weights sampled with, this worker's pid, the block's completions)."""
        if digest != self.digest:
            raise StaleWeights(f"asked to sample with weights {digest}, holding {self.digest}")
        return self.digest, os.getpid(), sample_block(self.sampler, prompts, start, seed, params)


class RayRolloutWorkers:
    """Two or more rollout workers, each a Ray actor; blocks go to them in turn (block i to worker i mod N)."""

    def __init__(self, policy: Any, base_model: str, count: int, gpus_each: float = 0.0) -> None:
        import ray
        import torch

        if not ray.is_initialized():
            ray.init(address=os.environ.get(RAY_ADDRESS_ENV), logging_level="WARNING")
        self.ray, self.policy = ray, policy
        worker_class = ray.remote(max_restarts=0)(RolloutWorker)
        config = policy.peft_config[policy.active_adapter]
        self.actors = [
            worker_class.options(num_cpus=WORKER_CPUS, num_gpus=gpus_each).remote(
                base_model, config, torch.get_num_threads()
            )
            for _ in range(count)
        ]
        places = ray.get([actor.place.remote() for actor in self.actors])
        print(
            f"rollout workers: {count} Ray actors ({', '.join(f'pid {pid} on node {node[:12]}' for pid, node in places)})",
            file=sys.stderr,
            flush=True,
        )
        self.digest: str | None = None
        self.sampled_with: list[tuple[str, int]] = []
        """(digest, worker pid) of every block sampled, in order: what the tests read."""

    def push_weights(self) -> str:
        """Every worker holds the policy's current adapter when this returns; its digest."""
        weights = adapter_weights(self.policy)
        digest = weights_digest(weights)
        if digest != self.digest:
            shared = self.ray.put(weights)
            self.ray.get([actor.load.remote(shared, digest) for actor in self.actors])
            self.digest = digest
        return digest

    def generate(self, prompts: list[list[int]], params: Any) -> Iterator[list[Any]]:
        call_seed = draw_call_seed()
        digest = self.push_weights()
        calls = [
            self.actors[index % len(self.actors)].generate.remote(
                prompts[start:end], start, block_seed(call_seed, index), params, digest
            )
            for index, (start, end) in enumerate(block_bounds(len(prompts)))
        ]
        for call in calls:
            used, pid, completions = self.ray.get(call)
            if used != digest:
                raise StaleWeights(f"a rollout worker sampled with weights {used}, not the current {digest}")
            self.sampled_with.append((used, pid))
            yield completions

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)


def rollout_sampler(policy: Any, tokenizer: Any, base_model: str) -> Any | None:
    """The sampler for a job run by the Ray executor (`RFTLAB_ROLLOUT_WORKERS` set), else None (the engine's
    usual choice). One worker on a GPU is None too: the usual choice there is vLLM, far faster than blocks."""
    count = int(os.environ.get(ROLLOUT_WORKERS_ENV) or 0)
    on_gpu = policy.device.type == "cuda"
    if count <= 0 or (count == 1 and on_gpu):
        return None
    if count == 1:
        return InProcessBlocks(policy, tokenizer)
    return RayRolloutWorkers(policy, base_model, count, 1.0 if on_gpu else 0.0)
