"""Confinement for untrusted code (evaluators): Landlock filesystem and TCP rules, user, network and PID
namespaces, no capabilities, resource limits, an allowlisted environment and a fresh scratch folder per process.
See docs/sandbox.md for the threat model."""

from rftlab.sandbox.host import (
    ALLOW_UNSANDBOXED_ENV,
    Capabilities,
    SandboxUnavailable,
    capabilities,
    require_sandbox,
)
from rftlab.sandbox.policy import Limits, SandboxPolicy
from rftlab.sandbox.process import Finished, SandboxedProcess, run, start

__all__ = [
    "ALLOW_UNSANDBOXED_ENV",
    "Capabilities",
    "Finished",
    "Limits",
    "SandboxPolicy",
    "SandboxUnavailable",
    "SandboxedProcess",
    "capabilities",
    "require_sandbox",
    "run",
    "start",
]
