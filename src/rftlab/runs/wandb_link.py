"""W&B from the launcher's side: what a job's `wandbConfig` carries, and the run's address read back.

With `wandb=on|offline` the create body's `wandbConfig` holds `enabled`, `project`, `entity` and the key (from
`WANDB_API_KEY`, put in only when sending), and `runId`: the job id, so the W&B run and the job share a name.

A sweep's runs share a W&B group named after the sweep (`sweeps=NAME`), with the point's overrides as tags and in
the run config. The local backend takes these as rftlab extensions of `wandbConfig` (`group`, `tags`, `config`, and
`mode: offline`) and starts the run with them. Fireworks accepts none of them, so for the hosted backend they are
applied through the W&B API once the job has created its run. Either way the run's address (the job's
`wandbConfig.url`) is recorded in the run folder's `wandb.json`, as soon as a refresh sees it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rftlab.fireworks.redact import redact
from rftlab.launch.spec import RunSpec
from rftlab.runs import overrides as ov
from rftlab.runs.records import RunRecord

LINK_FILE = "wandb.json"
TAG_MAX_CHARS = 64
HOSTED_ATTEMPTS = 3
EXTENSION_KEYS = ("mode", "group", "tags", "config")
"""`wandbConfig` fields only rftlab's local backend accepts."""
RUN_METADATA_PATHS = frozenset({"wandbConfig.group", "wandbConfig.tags", "wandbConfig.config"})
"""Describe the W&B run, not the job: not compared when a launch finds its job already created."""


def run_metadata(overrides: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The W&B group (the sweep's name), tags and config entries of one run, from its overrides."""
    params = ov.experiment_overrides(overrides)
    return {
        "group": ov.sweep_name(overrides),
        "tags": [f"{key}={value}"[:TAG_MAX_CHARS] for key, value in params.items()],
        "config": {
            key: value if (value := ov.lookup(config, key)) is not None else raw
            for key, raw in params.items()
        },
    }


def complete(
    body: dict[str, Any], spec: RunSpec, job_id: str, overrides: list[str], config: dict[str, Any]
) -> None:
    """Fill the body's `wandbConfig` once the job id is known (the id does not depend on these fields)."""
    wandb = body.get("wandbConfig")
    if not wandb:
        return
    wandb["runId"] = job_id
    if spec.backend.kind == "local":
        metadata = run_metadata(overrides, config)
        wandb.update({key: value for key, value in metadata.items() if value})


def apply_to_hosted_run(wandb_config: dict[str, Any], metadata: dict[str, Any], api: Any) -> None:
    """Group, tag and configure a run the hosted backend created (`api`: a `wandb.Api`)."""
    path = "/".join(str(wandb_config[key]) for key in ("entity", "project", "runId"))
    run = api.run(path)
    if metadata["group"]:
        run.group = metadata["group"]
    run.tags = sorted(set(run.tags or []) | set(metadata["tags"]))
    run.config.update(metadata["config"])
    run.update()


def _hosted_api() -> Any:
    import wandb

    key = os.environ.get("WANDB_API_KEY")
    if not key:
        raise RuntimeError("WANDB_API_KEY is not set; export it and run `rftlab status` again")
    return wandb.Api(api_key=key, timeout=30)


def record_run(record: RunRecord, job: dict[str, Any], api: Any = None) -> dict[str, Any] | None:
    """Record the W&B run of `job` (as the backend just returned it) once it has an address; for the hosted
    backend, also apply the sweep's group, tags and config to it. Returns what `wandb.json` holds."""
    wandb_config = job.get("wandbConfig") or {}
    url = wandb_config.get("url")
    if not wandb_config.get("enabled") or not url:
        return None
    link = record.read_json(LINK_FILE) or {}
    if link.get("url") == url and (link.get("applied", True) or link.get("attempts", 0) >= HOSTED_ATTEMPTS):
        return link
    metadata = run_metadata(record.overrides, record.read_config())
    link = {
        **link,
        "url": url,
        "run_id": wandb_config.get("runId", record.job_id),
        "project": wandb_config.get("project"),
        "entity": wandb_config.get("entity"),
        **metadata,
    }
    if (record.meta.get("backend") or {}).get("kind") == "fireworks":
        link["attempts"] = link.get("attempts", 0) + 1
        try:
            apply_to_hosted_run(wandb_config, metadata, api or _hosted_api())
            link.update(applied=True, error=None)
        except Exception as error:  # the W&B API is out of reach or refused: the job itself is fine
            link.update(applied=False, error=f"{type(error).__name__}: {error}")
    (record.path / LINK_FILE).write_text(json.dumps(redact(link), indent=2) + "\n")
    return link
