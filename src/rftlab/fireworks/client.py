"""An httpx client for the Fireworks REST API parts an RFT workflow touches.

Bearer auth; retries with backoff on 429 (honouring Retry-After), 5xx and connection errors; errors carry the
server's own message. The same code talks to api.fireworks.ai and to `rftlab serve`.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from rftlab.fireworks.redact import redact_text

DIRECT_UPLOAD_LIMIT_BYTES = 150 * 1024 * 1024
"""Fireworks takes a file of up to 150 MB in one `:upload` request; larger ones go through a signed URL."""
UPLOAD_CHUNK_BYTES = 1 << 20
Progress = Callable[[int, int], None]
"""Called with (bytes sent, total bytes) as an upload proceeds."""


class ApiError(RuntimeError):
    """A request the backend refused or could not answer; `message` is the server's own."""

    def __init__(self, method: str, url: str, status_code: int, code: str, message: str):
        self.method, self.url, self.status_code, self.code, self.message = (
            method,
            url,
            status_code,
            code,
            message,
        )
        super().__init__(redact_text(f"{method} {url} -> {status_code} {code}: {message}"))


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    pass


class RetryableError(ApiError):
    """429 or 5xx: worth another try, after `retry_after` seconds when the server said so."""

    def __init__(self, *args: Any, retry_after: float | None = None):
        super().__init__(*args)
        self.retry_after = retry_after


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_from(response: httpx.Response) -> ApiError:
    request = response.request
    code, message = response.reason_phrase, response.text.strip()
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        detail = payload.get("error", payload)
        if isinstance(detail, dict):
            message = str(detail.get("message") or detail.get("detail") or message)
            code = str(detail.get("status") or detail.get("code") or code)
        elif isinstance(detail, str):
            message = detail
    args = (request.method, str(request.url), response.status_code, code, message)
    if response.status_code == 429 or response.status_code >= 500:
        return RetryableError(*args, retry_after=_retry_after_seconds(response.headers.get("retry-after")))
    if response.status_code == 404:
        return NotFoundError(*args)
    if response.status_code == 409:
        return ConflictError(*args)
    return ApiError(*args)


class FireworksClient:
    """One account on one backend. Methods return the decoded JSON resources."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        account_id: str,
        *,
        timeout_s: float = 60.0,
        max_attempts: int = 6,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.account_id = account_id
        self.max_attempts = max_attempts
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "rftlab"},
            timeout=timeout_s,
        )
        self._backoff = wait_exponential_jitter(multiplier=0.5, max=max_backoff_s)

    def __enter__(self) -> FireworksClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return min(error.retry_after, self.max_backoff_s)
        return self._backoff(state)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, (RetryableError, httpx.TransportError))),
            wait=self._wait,
            stop=stop_after_attempt(self.max_attempts),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._send, method, path, **kwargs)

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kwargs)
        if response.is_error:
            raise _error_from(response)
        return response.json() if response.content else {}

    def _account(self, suffix: str) -> str:
        return f"/v1/accounts/{self.account_id}/{suffix}"

    @staticmethod
    def _tail(id_or_name: str) -> str:
        return id_or_name.rstrip("/").rsplit("/", 1)[-1]

    # datasets
    def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        return self.request("GET", self._account(f"datasets/{self._tail(dataset_id)}"))

    def create_dataset(self, dataset_id: str, dataset: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "POST", self._account("datasets"), json={"datasetId": dataset_id, "dataset": dataset}
        )

    def upload_dataset(
        self, dataset_id: str, filename: str, content: bytes, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Up to Fireworks' direct-upload limit in one multipart `:upload`; larger files through a signed URL."""
        if len(content) > DIRECT_UPLOAD_LIMIT_BYTES:
            return self._upload_through_signed_url("datasets", dataset_id, filename, content, progress)
        return self.request(
            "POST",
            self._account(f"datasets/{self._tail(dataset_id)}:upload"),
            files={"file": (filename, content, "application/jsonl")},
        )

    def _upload_through_signed_url(
        self, collection: str, resource_id: str, filename: str, content: bytes, progress: Progress | None
    ) -> dict[str, Any]:
        """`:getUploadEndpoint`, a PUT of the file to the URL it returns, then `:validateUpload`."""
        path = self._account(f"{collection}/{self._tail(resource_id)}")
        endpoint = self.request(
            "POST", f"{path}:getUploadEndpoint", json={"filenameToSize": {filename: str(len(content))}}
        )
        self._put_signed(endpoint["filenameToSignedUrls"][filename], content, progress)
        return self.request("POST", f"{path}:validateUpload", json={})

    def _put_signed(self, url: str, content: bytes, progress: Progress | None) -> None:
        """The PUT carries no Authorization header: the signed URL is its own credential."""
        size = len(content)

        def chunks() -> Iterator[bytes]:
            for start in range(0, size, UPLOAD_CHUNK_BYTES):
                yield content[start : start + UPLOAD_CHUNK_BYTES]
                if progress:
                    progress(min(start + UPLOAD_CHUNK_BYTES, size), size)

        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "X-Goog-Content-Length-Range": f"{size},{size}",
        }
        response = httpx.put(url, content=chunks(), headers=headers, timeout=self._http.timeout)
        if response.is_error:
            raise _error_from(response)

    # evaluators
    def get_evaluator(self, evaluator_id: str) -> dict[str, Any]:
        return self.request("GET", self._account(f"evaluators/{self._tail(evaluator_id)}"))

    def create_evaluator(self, evaluator_id: str, evaluator: dict[str, Any]) -> dict[str, Any]:
        body = {"evaluatorId": evaluator_id, "evaluator": evaluator}
        return self.request("POST", self._account("evaluatorsV2"), json=body)

    def upload_evaluator(
        self, evaluator_id: str, filename: str, archive: bytes, progress: Progress | None = None
    ) -> dict[str, Any]:
        """The evaluator's code (a tar.gz of its folder) through the signed-URL flow; the build starts."""
        return self._upload_through_signed_url("evaluators", evaluator_id, filename, archive, progress)

    def evaluator_build_log_url(self, evaluator_id: str) -> str:
        path = self._account(f"evaluators/{self._tail(evaluator_id)}:getBuildLogEndpoint")
        return self.request("GET", path).get("buildLogSignedUri", "")

    # reinforcement fine-tuning jobs
    def _job(self, job_id: str, suffix: str = "") -> str:
        return self._account(f"reinforcementFineTuningJobs/{self._tail(job_id)}{suffix}")

    def create_job(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST the body; the job id goes in the `reinforcementFineTuningJobId` query parameter."""
        return self.request(
            "POST",
            self._account("reinforcementFineTuningJobs"),
            params={"reinforcementFineTuningJobId": job_id},
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", self._job(job_id))

    def list_jobs(
        self, page_size: int = 200, order_by: str | None = None, filter: str | None = None
    ) -> Iterator[dict]:
        params: dict[str, Any] = {"pageSize": page_size}
        params.update({k: v for k, v in (("orderBy", order_by), ("filter", filter)) if v})
        while True:
            page = self.request("GET", self._account("reinforcementFineTuningJobs"), params=params)
            yield from page.get("reinforcementFineTuningJobs", [])
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", self._job(job_id, ":cancel"), json={})

    def resume_job(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", self._job(job_id, ":resume"), json={})

    def delete_job(self, job_id: str) -> dict[str, Any]:
        return self.request("DELETE", self._job(job_id))

    def job_metrics(self, job_id: str) -> list[dict[str, Any]]:
        return self.request("GET", self._job(job_id, "/metrics")).get("metrics", [])
