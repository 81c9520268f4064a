"""The command-line overrides of a run as experiment parameters: what W&B tags and `rftlab compare` labels show.

Overrides that steer the launch rather than the job (where it runs, W&B, waiting, output format, the sweep file
itself) are left out: they are the same for every point of a sweep and say nothing about the result.
"""

from __future__ import annotations

from typing import Any

CONTROL_KEYS = frozenset({"backend", "wandb", "sweeps", "hydra", "dry_run", "wait", "output", "quiet"})


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def is_control(key: str) -> bool:
    return key.split(".", 1)[0].split("/", 1)[0] in CONTROL_KEYS


def experiment_overrides(overrides: list[str]) -> dict[str, str]:
    """`["training.lora_rank=8", "wait=true"]` -> `{"training.lora_rank": "8"}`, in command-line order."""
    found: dict[str, str] = {}
    for override in overrides:
        key, _, value = override.partition("=")
        key = _key(key)
        if key and not is_control(key):
            found[key] = value
    return found


def sweep_name(overrides: list[str]) -> str | None:
    """NAME for a launch of `sweeps=NAME`."""
    for override in overrides:
        key, _, value = override.partition("=")
        if _key(key) == "sweeps" and value and value != "null":
            return value
    return None


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """The resolved value at `a.b.c`, or None when the path does not lead to a scalar."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return None if isinstance(value, (dict, list)) else value


def varying(per_run: list[dict[str, str]]) -> list[str]:
    """The keys whose value is not the same in every run (a key some runs lack counts as varying)."""
    keys: list[str] = []
    for overrides in per_run:
        keys += [key for key in overrides if key not in keys]
    return [key for key in keys if len({overrides.get(key) for overrides in per_run}) > 1]


def label(overrides: dict[str, str], keys: list[str]) -> str:
    return " ".join(f"{key}={overrides[key]}" for key in keys if key in overrides)


def run_labels(records: list) -> dict[str, str]:
    """Job id -> the overrides that tell this run apart from the others given (run records, `rftlab.runs.records`)."""
    per_run = {record.job_id: experiment_overrides(record.overrides) for record in records}
    keys = varying(list(per_run.values()))
    return {job_id: label(overrides, keys) for job_id, overrides in per_run.items()}
