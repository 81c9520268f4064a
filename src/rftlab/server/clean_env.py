"""The environment given to worker and evaluator-check processes: an allowlist, so the server's own secrets
(Fireworks and W&B keys, cloud credentials, database passwords) never reach user code."""

from __future__ import annotations

import os

PASSED_NAMES = (
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "WANDB_MODE",
    "WANDB_DIR",
    "WANDB_BASE_URL",
    "RFTLAB_HOME",
    "RFTLAB_SAMPLER",
    "RFTLAB_ALLOW_UNSANDBOXED",  # the operator's opt-in for hosts without a sandbox: the job worker checks it
)

PASSED_TO_UV = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "UV_OFFLINE",
    "UV_NATIVE_TLS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
"""How the operator points uv at an index, a wheel folder or a proxy. Not UV_CACHE_DIR: every install has a cache
of its own, since a cache shared between builds would let one build plant files in another's environment."""


def clean_environment(**extra: str) -> dict[str, str]:
    env = {name: os.environ[name] for name in PASSED_NAMES if name in os.environ}
    env.update(extra)
    return env
