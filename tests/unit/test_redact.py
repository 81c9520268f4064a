"""Secrets never reach printed output or any file under outputs/."""

from __future__ import annotations

from pathlib import Path

import pytest

from rftlab import cli
from rftlab.fireworks.redact import REDACTED, redact, redact_text, register_secret


def test_secret_keys_and_known_values_are_masked(marker_secrets):
    fireworks_key, wandb_key = marker_secrets
    register_secret("from-auth-ini-0123")
    value = {
        "wandbConfig": {"apiKey": "anything", "project": "p"},
        "headers": [f"Bearer {fireworks_key}"],
        "note": f"key={wandb_key}; other=from-auth-ini-0123",
        "count": 3,
    }
    masked = redact(value)
    assert masked["wandbConfig"] == {"apiKey": REDACTED, "project": "p"}
    assert masked["headers"] == [f"Bearer {REDACTED}"]
    assert masked["note"] == f"key={REDACTED}; other={REDACTED}"
    assert masked["count"] == 3
    assert redact_text(f"x{fireworks_key}x") == f"x{REDACTED}x"


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("output", ["text", "json", "flag"])
def test_dry_run_output_and_records_hold_no_secret(output, marker_secrets, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    overrides = ["wandb=on", "wandb.entity=team", "dry_run=true", f"output={output}"]
    assert cli.main(["launch", *overrides]) == 0
    assert cli.main(["launch", "-m", "training.lora_rank=8,16", *overrides]) == 0
    printed = capfd.readouterr()
    files = _files_under(tmp_path / "outputs")
    assert len([f for f in files if f.name == "request.json"]) == 3
    for secret in marker_secrets:
        assert secret not in printed.out + printed.err
        for path in files:
            assert secret not in path.read_text(), f"{secret} leaked into {path}"
    if output == "json":
        assert '"apiKey": "***"' in printed.out
    if output == "flag":
        assert '--wandb-api-key "$WANDB_API_KEY"' in printed.out
