"""A reporter that records what it was told, and checkpoints saved the way the engine saves them: for the tests of
how job workers store checkpoints (`server/job_storage.py`)."""

from __future__ import annotations

import shutil
from pathlib import Path


class Recorded:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def step(self, metrics):
        self.calls.append(f"step {metrics['step']}")

    def progress(self, percent, epoch, step, total_steps, output_tokens):
        self.calls.append("progress")

    def rollouts(self, kind, step, rollouts):
        self.calls.append("rollouts")

    def should_stop(self):
        return False

    def note(self, message):
        self.calls.append(message)


def save_checkpoint_like_the_engine(checkpoint_dir: Path, index: int, complete: bool = True) -> None:
    from rftlab.engine.checkpoint import MARKER

    folder = checkpoint_dir / f"step-{index:06d}"
    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "adapter_model.safetensors").write_bytes(bytes(index))
    (folder / "state.pt").write_text(str(index))
    if complete:
        (folder / MARKER).touch()
        for older in checkpoint_dir.glob("step-*"):
            if older != folder:
                shutil.rmtree(older)
