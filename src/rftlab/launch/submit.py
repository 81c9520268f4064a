"""Submit planned jobs and record what the backend answered.

Per backend: connect (the local server is started when needed), upload each distinct dataset and evaluator once
(named by content hash: GET first; a 409 on create means another launch made it), then create the jobs with at most
`backend.max_in_flight` requests in flight. A 409 on a job create means this exact request was launched before: the
existing job is fetched, compared with the request and recorded, so a repeated launch creates no duplicate.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rftlab.fireworks.client import ApiError, ConflictError, FireworksClient, NotFoundError
from rftlab.fireworks.redact import REDACTED, redact
from rftlab.launch import evaluator_pack
from rftlab.launch.mcp_server import McpServerError, ensure_mcp_server
from rftlab.launch.plan import InputRef, Plan
from rftlab.launch.progress import Progress
from rftlab.runs import wandb_link
from rftlab.runs.connect import Backend, Clients
from rftlab.runs.records import RunRecord

READY_TIMEOUT_S = 600.0  # Fireworks builds an evaluator within 10 minutes or fails it


class SubmitError(RuntimeError):
    pass


@dataclass
class Submitted:
    plan: Plan
    record: RunRecord
    outcome: str  # created | exists | failed
    message: str = ""
    job: dict[str, Any] | None = None


def _wait_for_state(
    fetch: Callable[[], dict[str, Any]],
    ready: str,
    failed: set[str],
    what: str,
    poll_s: float,
    progress: Progress,
    explain: Callable[[], str] = lambda: "",
) -> None:
    """Poll until `ready`, showing the state meanwhile; a failed state raises with the backend's own message
    (verbatim) and whatever `explain` adds, such as where the build log is."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_S
    while True:
        resource = fetch()
        state = resource.get("state")
        if state == ready:
            if time.monotonic() - started > poll_s:
                progress.finished(f"{what}: {state}")
            return
        if state in failed:
            message = (resource.get("status") or {}).get("message", "")
            raise SubmitError(f"{what} is {state}: {message}{explain()}")
        if time.monotonic() > deadline:
            raise SubmitError(f"{what} still {state} after {READY_TIMEOUT_S:.0f} s")
        progress.waiting(what, str(state), time.monotonic() - started)
        time.sleep(poll_s)


def example_count(content: bytes) -> int:
    return sum(1 for line in content.splitlines() if line.strip())


def ensure_dataset(client: FireworksClient, ref: InputRef, poll_s: float, progress: Progress) -> None:
    """Create the dataset as Fireworks expects an uploaded one (`userUploaded`, `exampleCount`, `format`), then
    upload its rows: one `:upload` up to 150 MB, the signed-URL flow (with a progress bar) beyond."""
    local = ref.local
    assert local is not None
    try:
        dataset = client.get_dataset(local.resource_id)
    except NotFoundError:
        content = local.content()
        body = {
            "displayName": local.upload_name,
            "userUploaded": {},
            "exampleCount": str(example_count(content)),
            "format": "FORMAT_UNSPECIFIED",
        }
        try:
            dataset = client.create_dataset(local.resource_id, body)
        except ConflictError:
            dataset = client.get_dataset(local.resource_id)
    if dataset.get("state") == "UPLOADING":
        client.upload_dataset(
            local.resource_id, local.upload_name, local.content(), progress.upload(local.upload_name)
        )
    _wait_for_state(
        lambda: client.get_dataset(local.resource_id), "READY", set(), f"dataset {ref.name}", poll_s, progress
    )


def evaluator_body(ref: InputRef, entry_func: str) -> dict[str, Any]:
    """An evaluatorsV2 resource with the code inline: the evaluator file's contents, its entry point."""
    local = ref.local
    assert local is not None
    filename = local.path.name
    return {
        "displayName": filename,
        "entryPoint": f"{filename}::{entry_func}",
        "criteria": [
            {
                "type": "CODE_SNIPPETS",
                "name": local.path.stem,
                "codeSnippets": {
                    "language": "python",
                    "fileContents": {filename: local.path.read_text()},
                    "entryFile": filename,
                    "entryFunc": entry_func,
                },
            }
        ],
    }


def ensure_evaluator(
    client: FireworksClient, ref: InputRef, entry_func: str, hosted: bool, poll_s: float, progress: Progress
) -> None:
    """Create the evaluator (named by content hash, so an unchanged one is found and reused) and wait for
    ACTIVE. `hosted` (backend=fireworks): as Fireworks takes it, a tar.gz of the evaluator's folder whose entry
    is an @evaluation_test (generated for a plain evaluator file) through evaluatorsV2, :getUploadEndpoint, a PUT
    and :validateUpload; otherwise the file's code inline."""
    local = ref.local
    assert local is not None
    try:
        client.get_evaluator(local.resource_id)
    except NotFoundError:
        try:
            if hosted:
                package = evaluator_pack.pack(local.path, entry_func)
                body = {
                    "displayName": local.path.name,
                    "description": f"{local.path.name}::{entry_func}, packed by rftlab",
                    "entryPoint": package.entry_point,
                }
                client.create_evaluator(local.resource_id, body)
                archive = package.tar_gz()
                client.upload_evaluator(
                    local.resource_id, package.archive_name, archive, progress.upload(package.archive_name)
                )
            else:
                client.create_evaluator(local.resource_id, evaluator_body(ref, entry_func))
        except ConflictError:  # another launch created it meanwhile
            pass

    def where_the_log_is() -> str:
        try:
            url = client.evaluator_build_log_url(local.resource_id)
        except ApiError:
            return ""
        return f"\nbuild log: {url}" if url else ""

    _wait_for_state(
        lambda: client.get_evaluator(local.resource_id),
        "ACTIVE",
        {"BUILD_FAILED"},
        f"evaluator {ref.name}",
        poll_s,
        progress,
        where_the_log_is,
    )


def body_to_send(plan: Plan) -> dict[str, Any]:
    """The recorded body with the W&B key put back, read from the environment at this moment."""
    body = json.loads(json.dumps(plan.body))
    wandb = body.get("wandbConfig")
    if wandb and wandb.get("apiKey") == REDACTED:
        wandb["apiKey"] = os.environ["WANDB_API_KEY"]
    return body


def _same(sent: Any, found: Any, key: str) -> bool:
    if key in ("dataset", "evaluator", "evaluationDataset", "outputModel", "warmStartFrom", "baseModel"):
        return str(sent).rsplit("/", 1)[-1] == str(found).rsplit("/", 1)[-1]
    if key == "extraBody":
        return json.loads(sent) == (json.loads(found) if isinstance(found, str) else found)
    if isinstance(sent, float) or isinstance(found, float):
        return isinstance(found, (int, float)) and math.isclose(sent, found, rel_tol=1e-6, abs_tol=1e-12)
    return sent == found


def differences(sent: dict[str, Any], found: dict[str, Any], prefix: str = "") -> list[str]:
    """Where the existing job disagrees with what this launch would send (fields the backend does not echo,
    like the W&B key, are skipped, and so is the W&B run's group, tags and config: the same job reached from
    another sweep keeps its run)."""
    out = []
    for key, value in sent.items():
        path = f"{prefix}{key}"
        if key == "apiKey" or path in wandb_link.RUN_METADATA_PATHS:
            continue
        if isinstance(value, dict):
            out += differences(value, found.get(key) or {}, path + ".")
        elif not _same(value, found.get(key), key):
            out.append(f"{path}: this launch sends {value!r}, the existing job has {found.get(key)!r}")
    return out


def submit_job(client: FireworksClient, plan: Plan, record: RunRecord) -> Submitted:
    try:
        job = client.create_job(plan.job_id, body_to_send(plan))
        outcome = "created"
    except ConflictError:
        try:
            job = client.get_job(plan.job_id)
        except ApiError as err:
            return Submitted(plan, record, "failed", err.message)
        mismatch = differences(plan.body, job)
        if mismatch:
            message = f"job id {plan.job_id} exists with a different request: " + "; ".join(mismatch)
            record.write_response({"error": message, "existing": job})
            return Submitted(plan, record, "failed", message, job)
        outcome = "exists"
    except ApiError as err:
        record.write_response(
            {"error": {"status": err.status_code, "code": err.code, "message": err.message}}
        )
        return Submitted(plan, record, "failed", err.message)
    record.write_response(job)
    record.write_job(job)
    return Submitted(plan, record, outcome, job=job)


def _upload_inputs(client: FireworksClient, plans: list[Plan], poll_s: float) -> dict[str, str]:
    """Upload each distinct local input once; the error per resource name for those that failed."""
    progress = Progress(quiet=plans[0].spec.quiet or plans[0].spec.output == "json")
    hosted = plans[0].spec.backend.kind == "fireworks"
    errors: dict[str, str] = {}
    done: set[str] = set()
    for plan in plans:
        inputs = [
            (plan.dataset, None),
            (plan.evaluation_dataset, None),
            (plan.evaluator, plan.spec.evaluator.entry_func),
        ]
        for ref, entry_func in inputs:
            if ref is None or ref.local is None or ref.name in done:
                continue
            done.add(ref.name)
            try:
                if entry_func is None:
                    ensure_dataset(client, ref, poll_s, progress)
                else:
                    ensure_evaluator(client, ref, entry_func, hosted, poll_s, progress)
            except (ApiError, SubmitError) as err:
                errors[ref.name] = str(err)
    return errors


def _register_mcp_servers(client: FireworksClient, plans: list[Plan]) -> dict[str, str]:
    """Each distinct MCP server the jobs name, registered when needed and checked ACTIVE; the error per name."""
    errors: dict[str, str] = {}
    done: set[str] = set()
    for plan in plans:
        ref = plan.mcp_server
        if ref is None or ref.name in done:
            continue
        done.add(ref.name)
        try:
            ensure_mcp_server(client, ref)
        except (ApiError, McpServerError) as err:
            errors[ref.name] = str(err)
    return errors


def submit_all(runs: list[tuple[Plan, RunRecord]], clients: Clients) -> list[Submitted]:
    results: list[Submitted] = []
    by_backend: dict[Backend, list[tuple[Plan, RunRecord]]] = {}
    for plan, record in runs:
        spec = plan.spec.backend
        by_backend.setdefault(Backend(spec.kind, spec.base_url, plan.account_id, spec.profile), []).append(
            (plan, record)
        )
    for backend, group in by_backend.items():
        client = clients.get(backend)
        poll_s = group[0][0].spec.backend.poll_interval_s
        upload_errors = _upload_inputs(client, [plan for plan, _ in group], poll_s)
        upload_errors.update(_register_mcp_servers(client, [plan for plan, _ in group]))
        ready = []
        for plan, record in group:
            failed = [
                upload_errors[name]
                for name in (
                    plan.dataset.name,
                    plan.evaluator.name,
                    plan.evaluation_dataset and plan.evaluation_dataset.name,
                    plan.mcp_server and plan.mcp_server.name,
                )
                if name in upload_errors
            ]
            if failed:
                record.write_response({"error": {"message": "; ".join(failed)}})
                results.append(Submitted(plan, record, "failed", "; ".join(failed)))
            else:
                ready.append((plan, record))
        workers = max(1, min(group[0][0].spec.backend.max_in_flight, len(ready)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results += pool.map(submit_job, [client] * len(ready), *zip(*ready, strict=True))
    return results


def describe(submitted: Submitted) -> str:
    job = submitted.job or {}
    if submitted.outcome == "failed":
        return f"failed   {submitted.plan.job_id}: {submitted.message}"
    note = " (launched before: reattached, nothing duplicated)" if submitted.outcome == "exists" else ""
    return (
        f"{submitted.outcome:<8} {job.get('name', submitted.plan.job_name)} [{job.get('state', '?')}]{note}\n"
        f"         record {submitted.record.path}\n"
        f"         dashboard {submitted.record.dashboard_url}"
    )


def as_json(results: list[Submitted]) -> list[dict[str, Any]]:
    return [
        redact({"outcome": r.outcome, "record": str(r.record.path), "job": r.job, "error": r.message or None})
        for r in results
    ]
