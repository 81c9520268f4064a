"""The sizes and counts `rftlab serve` accepts, each refused with a 4xx that names the limit and the flag that
sets it. The defaults are what a shared deployment would pick; `rftlab serve --help` lists the flags."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields

MB = 1 << 20


def _limit(default: float, help_text: str) -> float:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class ServerLimits:
    max_request_mb: float = _limit(1.0, "largest JSON request body (a job, a dataset, a secret), MB")
    max_inline_code_mb: float = _limit(
        4.0, "largest evaluator create request, i.e. its inline code, MB (larger code: upload a .tar.gz)"
    )
    max_upload_mb: float = _limit(150.0, "largest multipart :upload (Fireworks' direct upload limit), MB")
    max_upload_url_mb: float = _limit(2048.0, "largest file a :getUploadEndpoint request may declare, MB")
    upload_ttl_hours: float = _limit(
        6.0,
        "hours an unused upload URL, or a file PUT there but never validated, is kept after its last byte",
    )
    max_row_kb: float = _limit(8192.0, "largest dataset line, KB")
    max_rows: int = _limit(1_000_000, "most lines in one dataset")
    max_row_depth: int = _limit(64, "deepest nesting of lists and objects in one dataset row")
    worker_log_mb: float = _limit(10.0, "a job's worker.log rotates to worker.log.1 at this size, MB")
    max_queued_jobs_per_account: int = _limit(
        100, "unfinished (queued or running) jobs one account may have; more are refused with 429"
    )
    max_running_jobs_per_account: int = _limit(
        0, "jobs of one account trained at once (0: up to --max-running-jobs)"
    )
    evaluator_install_minutes: float = _limit(
        10.0, "time installing one evaluator environment's requirements.txt may take, minutes"
    )
    evaluator_env_mb: float = _limit(
        8192.0, "disk one evaluator environment may take while it installs (its downloads included), MB"
    )
    evaluator_sdists: bool = _limit(
        False,
        "also build evaluator requirements that publish no wheel from source: their setup code then runs, in "
        "the evaluator sandbox with network",
    )

    @property
    def request_bytes(self) -> int:
        return int(self.max_request_mb * MB)

    @property
    def inline_code_bytes(self) -> int:
        return int(self.max_inline_code_mb * MB)

    @property
    def upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def upload_url_bytes(self) -> int:
        return int(self.max_upload_url_mb * MB)

    @property
    def upload_ttl_s(self) -> float:
        return self.upload_ttl_hours * 3600

    @property
    def row_bytes(self) -> int:
        return int(self.max_row_kb * 1024)

    @property
    def worker_log_bytes(self) -> int:
        return int(self.worker_log_mb * MB)

    @property
    def evaluator_env_bytes(self) -> int:
        return int(self.evaluator_env_mb * MB)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("limits")
    for spec in fields(ServerLimits):
        if isinstance(spec.default, bool):
            group.add_argument(flag(spec.name), action="store_true", help=spec.metadata["help"])
            continue
        group.add_argument(
            flag(spec.name),
            type=type(spec.default),
            default=spec.default,
            help=f"{spec.metadata['help']} (default: {spec.default})",
        )


def limits_from(args: argparse.Namespace) -> ServerLimits:
    """The limits the parsed flags ask for; ValueError naming the flag of a value out of range."""
    values = {spec.name: getattr(args, spec.name) for spec in fields(ServerLimits)}
    for name, value in values.items():
        if isinstance(value, bool):
            continue
        if value < 0 or (value == 0 and name != "max_running_jobs_per_account"):
            raise ValueError(f"{flag(name)} must be above 0 (got {value:g})")
    return ServerLimits(**values)
