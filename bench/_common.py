"""Shared pieces of the benchmark scripts: the machine's description, peak memory, the bundled task, the held-out
reward measured the engine's way, and running one side of a comparison in its own process."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rftlab.engine.api import EvaluatorCode
from rftlab.paths import ASSETS_DIR

BENCH_THREADS = 2
"""The matmul threads of the peak measurement and of TRL: torch's default on this 2-core machine, and what the
engine runs with too."""
ARITHMETIC_DIR = ASSETS_DIR / "arithmetic"
EXACT_MATCH = EvaluatorCode(root=ARITHMETIC_DIR, entry_file="exact_match.py", entry_func="evaluate")


@dataclass(frozen=True)
class Task:
    """A bundled task a benchmark trains on: its rows (assets/<folder>/train.jsonl, and eval.jsonl where the
    task holds rows out itself), its evaluator and the model it is sized for."""

    folder: str
    evaluator: EvaluatorCode
    model: str

    def rows(self, name: str) -> list[dict[str, Any]]:
        path = ASSETS_DIR / self.folder / name
        if not path.is_file():
            return []
        with path.open() as lines:
            return [json.loads(line) for line in lines if line.strip()]

    def evaluate_function(self) -> Callable[..., Any]:
        """The evaluator's entry function, imported into this process."""
        path = self.evaluator.root / self.evaluator.entry_file
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, self.evaluator.entry_func)


TASKS = {
    "arithmetic": Task("arithmetic", EXACT_MATCH, "tiny-arith"),
    "short_sums": Task(
        "short_sums",
        EvaluatorCode(root=ASSETS_DIR / "short_sums", entry_file="number_answer.py", entry_func="evaluate"),
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


def pin_threads(threads: int = BENCH_THREADS) -> None:
    torch.set_num_threads(threads)


def arithmetic_rows() -> list[dict[str, Any]]:
    with (ARITHMETIC_DIR / "train.jsonl").open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, str]:
    cpu_model = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model,
        "ram_gib": f"{total_kib / 1024**2:.1f}",
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def print_machine() -> None:
    info = machine()
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['ram_gib']} GiB RAM, torch {info['torch']}, "
        f"python {info['python']}"
    )


def run_side(script: Path, side: str, argv: list[str]) -> dict[str, Any]:
    """Run `script --side SIDE ARGV...` in a fresh process (so its peak memory is its own) and return the JSON
    object it wrote to the file named by `--result`."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as folder:
        result_path = Path(folder) / "result.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        subprocess.run(
            [sys.executable, str(script), "--side", side, "--result", str(result_path), *argv],
            check=True,
            env=env,
        )
        return json.loads(result_path.read_text())


class StepLog:
    """A Reporter for `run_job` that keeps every step's metrics."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def step(self, metrics: dict[str, float]) -> None:
        self.steps.append(dict(metrics))

    def progress(self, percent: float, epoch: int, step: int, total_steps: int, output_tokens: int) -> None:
        pass

    def rollouts(self, kind: str, step: int, rollouts: list[dict]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def note(self, message: str) -> None:
        pass
