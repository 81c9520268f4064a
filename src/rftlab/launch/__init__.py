"""From configs to submitted jobs: compose (Hydra) -> spec (pydantic) -> plan -> submit; pure until submit."""
