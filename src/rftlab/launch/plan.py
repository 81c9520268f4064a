"""From a resolved config to the exact request a launch will send: validate, hash inputs, render, name the job.

Pure: reads local files (the dataset, the evaluator, auth.ini for the account id) and contacts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from rftlab.fireworks.credentials import auth_ini_path, read_auth_ini
from rftlab.fireworks.redact import REDACTED, redact
from rftlab.launch import evaluator_pack, ids, render, source_job
from rftlab.launch.mcp_server import McpServerRef, mcp_server_ref
from rftlab.launch.spec import ConfigProblem, RunSpec, SpecError, validate
from rftlab.runs import wandb_link

UNKNOWN_ACCOUNT = "ACCOUNT_ID"  # shown in a dry run when no account id is configured anywhere
_PATH_KEYS = (("dataset", "path"), ("dataset", "evaluation_path"), ("evaluator", "path"))


@dataclass(frozen=True)
class LocalInput:
    """A local file the backend needs, named by its content hash so an upload happens once."""

    path: Path
    sha256: str
    """Of what is uploaded: the whole file, or its first `max_rows` rows."""
    resource_id: str
    max_rows: int | None = None

    @property
    def upload_name(self) -> str:
        if self.max_rows is None:
            return self.path.name
        return f"{self.path.stem}-first{self.max_rows}{self.path.suffix}"

    def content(self) -> bytes:
        """The bytes to upload."""
        if self.max_rows is None:
            return self.path.read_bytes()
        return ids.jsonl_head(self.path, self.max_rows)


@dataclass(frozen=True)
class InputRef:
    name: str
    local: LocalInput | None = None


@dataclass
class Plan:
    """One job of a launch, ready to submit."""

    spec: RunSpec
    config: dict[str, Any]
    """The resolved config, local paths made absolute, secrets redacted (what config.yaml holds)."""
    account_id: str
    job_id: str
    body: dict[str, Any]
    """The create body with secrets redacted; `rftlab.launch.run` puts the W&B key back only when sending."""
    dataset: InputRef
    evaluator: InputRef
    evaluation_dataset: InputRef | None
    overrides: list[str] = field(default_factory=list)
    mcp_server: McpServerRef | None = None
    """The MCP server the job names, registered by the launcher when given by URL."""

    @property
    def collection_path(self) -> str:
        return f"/v1/accounts/{self.account_id}/reinforcementFineTuningJobs"

    @property
    def job_name(self) -> str:
        return f"accounts/{self.account_id}/reinforcementFineTuningJobs/{self.job_id}"

    @property
    def request(self) -> dict[str, Any]:
        """What request.json holds: the create call as sent, secrets redacted."""
        return {
            "method": "POST",
            "url": self.spec.backend.base_url.rstrip("/") + self.collection_path,
            "params": {"reinforcementFineTuningJobId": self.job_id},
            "body": self.body,
        }

    def request_json(self) -> str:
        return json.dumps(self.request, indent=2) + "\n"

    def input_hashes(self) -> dict[str, str | None]:
        refs = {
            "dataset": self.dataset,
            "evaluator": self.evaluator,
            "evaluation_dataset": self.evaluation_dataset,
        }
        return {key: ref.local.sha256 if ref and ref.local else None for key, ref in refs.items()}


def absolutize_paths(config: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """Local input paths relative to the directory the user launched from, made absolute."""
    for section, key in _PATH_KEYS:
        value = config.get(section, {}).get(key)
        if isinstance(value, str) and value:
            config[section][key] = str((cwd / Path(value).expanduser()).resolve())
    return config


@lru_cache(maxsize=64)
def _sha256_cached(path: Path, mtime_ns: int, size: int, max_rows: int | None) -> str:
    if max_rows is None:
        return ids.file_sha256(path)
    return hashlib.sha256(ids.jsonl_head(path, max_rows)).hexdigest()


def _local_input(
    key: str, path_text: str, slug: str, salt: str = "", max_rows: int | None = None
) -> LocalInput:
    path = Path(path_text)
    if not path.is_file():
        raise SpecError([ConfigProblem(key=key, value=path_text, message="no such file")])
    stat = path.stat()
    sha = _sha256_cached(path, stat.st_mtime_ns, stat.st_size, max_rows)
    digest = ids.json_sha256([sha, salt]) if salt else sha
    if max_rows is not None:
        slug = f"{slug}-first{max_rows}"
    return LocalInput(path=path, sha256=sha, resource_id=ids.with_hash(slug, digest), max_rows=max_rows)


def _package_sha256(path: str, entry_func: str) -> str:
    """What backend=fireworks uploads is the evaluator's whole folder, packed: its hash names the evaluator."""
    try:
        return evaluator_pack.pack(Path(path), entry_func).sha256
    except (ValueError, SyntaxError) as error:
        raise SpecError([ConfigProblem(key="evaluator.path", value=path, message=str(error))]) from None


def _read_source_job(spec: RunSpec) -> dict[str, Any]:
    """The job `source_job` names, read from the launch's backend."""
    import httpx

    from rftlab.fireworks.client import ApiError
    from rftlab.fireworks.credentials import CredentialsError
    from rftlab.runs.connect import Backend, connect

    backend, account = spec.backend, resolve_account(spec)
    if account is None:
        raise SpecError(
            [ConfigProblem(key="backend.account_id", value=None, message="needed to read source_job")]
        )
    try:
        with connect(Backend(backend.kind, backend.base_url, account, backend.profile)) as client:
            return client.get_job(str(spec.source_job))
    except (ApiError, CredentialsError, httpx.HTTPError) as error:
        message = f"cannot read the job to copy from {backend.base_url}: {error}"
        raise SpecError([ConfigProblem(key="source_job", value=spec.source_job, message=message)]) from None


def resolve_account(spec: RunSpec) -> str | None:
    """The account from config, else the profile's auth.ini, else `FIREWORKS_ACCOUNT_ID`."""
    backend = spec.backend
    return (
        backend.account_id
        or read_auth_ini(auth_ini_path(backend.profile)).get("account_id")
        or os.environ.get("FIREWORKS_ACCOUNT_ID")
    )


def _inputs(spec: RunSpec, account: str) -> tuple[InputRef, InputRef, InputRef | None]:
    data, evaluator = spec.dataset, spec.evaluator
    if data.path:
        local = _local_input(
            "dataset.path",
            data.path,
            f"{Path(data.path).parent.name}-{Path(data.path).stem}",
            max_rows=data.max_rows,
        )
        dataset = InputRef(ids.resource_name(account, "datasets", local.resource_id), local)
    else:
        dataset = InputRef(ids.resource_name(account, "datasets", str(data.id)))
    if evaluator.path:
        salt = str(evaluator.entry_func)
        if spec.backend.kind == "fireworks" and Path(evaluator.path).is_file():
            salt += ":" + _package_sha256(evaluator.path, salt)
        local = _local_input("evaluator.path", evaluator.path, Path(evaluator.path).stem, salt=salt)
        scorer = InputRef(ids.resource_name(account, "evaluators", local.resource_id), local)
    else:
        scorer = InputRef(ids.resource_name(account, "evaluators", str(evaluator.id)))
    evaluation: InputRef | None = None
    if data.evaluation_path:
        path = Path(data.evaluation_path)
        local = _local_input(
            "dataset.evaluation_path", data.evaluation_path, f"{path.parent.name}-{path.stem}"
        )
        evaluation = InputRef(ids.resource_name(account, "datasets", local.resource_id), local)
    elif data.evaluation_dataset:
        evaluation = InputRef(ids.resource_name(account, "datasets", data.evaluation_dataset))
    return dataset, scorer, evaluation


def job_slug(spec: RunSpec, dataset: InputRef) -> str:
    model = ids.resource_tail(spec.model.base_model or spec.model.warm_start_from or "model")
    data = dataset.local.resource_id.rsplit("-", 1)[0] if dataset.local else ids.resource_tail(dataset.name)
    return f"{model}-{data}"


def build_plan(config: dict[str, Any], cwd: Path, overrides: list[str] | None = None) -> Plan:
    """Validate one resolved config and render its request; `SpecError` names every problem."""
    config = absolutize_paths(config, cwd)
    spec = validate(config, wandb_api_key_set=bool(os.environ.get("WANDB_API_KEY")))
    if spec.source_job:
        config = source_job.apply(config, _read_source_job(spec), list(overrides or []))
        spec = validate(config, wandb_api_key_set=bool(os.environ.get("WANDB_API_KEY")))
    account = resolve_account(spec)
    if account is None:
        if not spec.dry_run:
            raise SpecError(
                [
                    ConfigProblem(
                        key="backend.account_id",
                        value=None,
                        message=f"no account id: set backend.account_id=..., or account_id in "
                        f"{auth_ini_path(spec.backend.profile)}, or FIREWORKS_ACCOUNT_ID",
                    )
                ]
            )
        account = UNKNOWN_ACCOUNT
    dataset, evaluator, evaluation = _inputs(spec, account)
    # an offline W&B run needs no key, so none is sent
    online_wandb = spec.wandb.enabled and spec.wandb.mode == "online"
    wandb_key = REDACTED if online_wandb and os.environ.get("WANDB_API_KEY") else None
    mcp = mcp_server_ref(spec.mcp_server, account)
    names = render.InputNames(dataset.name, evaluator.name, evaluation and evaluation.name, mcp and mcp.name)
    body = render.request_body(spec, names, wandb_key)
    if spec.job_id:
        job_id = spec.job_id
    else:
        identity = {
            "body": body,
            "inputs": [ref.local.sha256 for ref in (dataset, evaluator, evaluation) if ref and ref.local],
        }
        job_id = ids.with_hash(job_slug(spec, dataset), ids.json_sha256(identity))
    wandb_link.complete(body, spec, job_id, list(overrides or []), config)
    return Plan(
        spec=spec,
        config=redact(config),
        account_id=account,
        job_id=job_id,
        body=body,
        dataset=dataset,
        evaluator=evaluator,
        evaluation_dataset=evaluation,
        overrides=list(overrides or []),
        mcp_server=mcp,
    )
