"""Step checkpoints: adapter, optimizer, scheduler, RNG state and the job's progress, so a resumed job continues
exactly where it stopped.

Each checkpoint is a folder `step-NNNNNN/` holding the adapter in PEFT format (usable for a warm start),
`state.pt` (optimizer, scheduler, RNG: tensors and plain numbers only, loaded with `torch.load(weights_only=True)`,
so a planted file cannot run code), `progress.json` (the job's position and metric history: plain data, which
`torch.save` pickles object by object, slowly once the history is long), and a `COMPLETE` marker written last: a
checkpoint interrupted half-way is ignored, and older ones are removed only once a newer one is complete.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file

from rftlab.engine.adapter import save_adapter
from rftlab.engine.trainer import Trainer

MARKER = "COMPLETE"
PROGRESS_FILE = "progress.json"


def _complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    if not checkpoint_dir.is_dir():
        return []
    return sorted(path for path in checkpoint_dir.glob("step-*") if (path / MARKER).exists())


def _python_rng_state() -> list:
    """`random.getstate()` as lists and numbers (what a weights-only load gives back)."""
    version, internal, gauss_next = random.getstate()
    return [version, list(internal), gauss_next]


def save_checkpoint(
    checkpoint_dir: Path, index: int, model: PeftModel, trainer: Trainer, progress: dict[str, Any]
):
    """Checkpoint number `index` (it grows with every save of a job)."""
    folder = checkpoint_dir / f"step-{index:06d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_adapter(model, folder / "adapter")
    state = {
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "python_rng": _python_rng_state(),
    }
    torch.save(state, folder / "state.pt")
    (folder / PROGRESS_FILE).write_text(json.dumps(progress))
    (folder / MARKER).touch()
    for older in checkpoint_dir.glob("step-*"):
        if older != folder:
            shutil.rmtree(older, ignore_errors=True)


def restore_checkpoint(checkpoint_dir: Path, model: PeftModel, trainer: Trainer) -> dict[str, Any] | None:
    """Load the last complete checkpoint into `model` and `trainer`; its progress dict, or None if there is none."""
    found = _complete_checkpoints(checkpoint_dir)
    if not found:
        return None
    folder = found[-1]
    set_peft_model_state_dict(model, load_file(folder / "adapter" / "adapter_model.safetensors"))
    state = torch.load(folder / "state.pt", weights_only=True)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    version, internal, gauss_next = state["python_rng"]
    random.setstate((version, tuple(internal), gauss_next))
    return json.loads((folder / PROGRESS_FILE).read_text())
