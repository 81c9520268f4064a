"""Where the local backend keeps files inside its state dir.

<state>/rftlab.db                       SQLite database (unless --database-url)
<state>/server.pid, server.lock          the running server
<state>/uploads/<token>                  files PUT to upload URLs, until validated (and multipart uploads)
<state>/accounts/<a>/datasets/<d>/       the dataset's JSONL
<state>/accounts/<a>/evaluators/<e>/code the evaluator's source folder
<state>/accounts/<a>/jobs/<j>/           checkpoints/, worker.log (and worker.log.1, the one before)
<state>/accounts/<a>/models/<m>/         the output adapter (PEFT folder)

With `rftlab serve --storage-url URL`, the accounts/ part is also kept under URL, each file at its path relative to
the state dir (rftlab.server.storage), and a Ray node's cache has the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    root: Path

    @property
    def database_path(self) -> Path:
        return self.root / "rftlab.db"

    @property
    def pid_file(self) -> Path:
        return self.root / "server.pid"

    @property
    def lock_file(self) -> Path:
        return self.root / "server.lock"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def uploads_dir(self) -> Path:
        return self.root / "uploads"

    def upload_file(self, token: str) -> Path:
        return self.uploads_dir / token

    def dataset_file(self, account_id: str, dataset_id: str) -> Path:
        return self.root / "accounts" / account_id / "datasets" / dataset_id / "data.jsonl"

    def evaluator_code(self, account_id: str, evaluator_id: str) -> Path:
        return self.root / "accounts" / account_id / "evaluators" / evaluator_id / "code"

    def job_dir(self, account_id: str, job_id: str) -> Path:
        return self.root / "accounts" / account_id / "jobs" / job_id

    def model_dir(self, account_id: str, model_id: str) -> Path:
        return self.root / "accounts" / account_id / "models" / model_id
