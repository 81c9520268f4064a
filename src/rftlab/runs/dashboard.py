"""Where a job's page is: the local backend's own dashboard, or Fireworks' web app for hosted jobs."""

from __future__ import annotations

FIREWORKS_APP = "https://app.fireworks.ai"


def job_dashboard_url(backend_kind: str, base_url: str, job_id: str) -> str:
    root = base_url.rstrip("/") if backend_kind == "local" else FIREWORKS_APP
    return f"{root}/dashboard/fine-tuning/reinforcement/{job_id}"
