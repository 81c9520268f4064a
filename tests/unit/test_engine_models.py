"""Base models: where a name loads from, what a failed load says, and the stable name an adapter records."""

from __future__ import annotations

import shutil

import pytest

from rftlab.engine.api import JobFailed
from rftlab.engine.models import (
    choose_placement,
    declared_eos_ids,
    load_base,
    local_models_dir,
    model_source,
)
from rftlab.paths import ASSETS_DIR

TINY = ASSETS_DIR / "tiny-arith"
PREPARED_GGUF = local_models_dir() / "HuggingFaceTB" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_error(name: str) -> str:
    with pytest.raises(JobFailed) as failure:
        load_base(name, choose_placement())
    return str(failure.value)


def test_a_mistyped_absolute_folder_is_not_taken_for_a_hub_id(tmp_path):
    message = load_error(str(tmp_path / "SmolLM2-135M-Instruc"))
    assert "no such folder" in message and "not a hub repo id" in message
    assert "Repo id must be" not in message


def test_a_relative_name_that_is_neither_folder_nor_cached_repo_names_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = load_error("models/SmolLM2")
    assert "hub repo models/SmolLM2" in message
    assert "HF_HUB_OFFLINE" in message
    assert f"no folder {tmp_path / 'models' / 'SmolLM2'}" in message


def test_a_missing_gguf_file_says_so(tmp_path):
    message = load_error(str(tmp_path / "model.Q4_1.gguf"))
    assert "GGUF file" in message and "does not exist" in message


def test_a_broken_gguf_file_fails_with_the_file_named(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    message = load_error(str(broken))
    assert f"GGUF file {broken}" in message
    assert "config file" not in message


def test_a_folder_without_config_points_at_the_gguf_file_inside(tmp_path):
    (tmp_path / "model.Q4_1.gguf").write_bytes(b"")
    message = load_error(str(tmp_path))
    assert "no config.json" in message and "model.Q4_1.gguf" in message


def test_a_hub_id_prepared_offline_loads_from_the_local_models_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("RFTLAB_MODELS_DIR", str(tmp_path))
    shutil.copytree(TINY, tmp_path / "org" / "tiny-chat")
    assert model_source("org/tiny-chat").kind == "folder"
    assert model_source("org/other").kind == "hub"


def test_the_adapter_records_the_base_by_its_name_not_its_folder(tmp_path):
    from rftlab.engine.adapter import attach_adapter

    loaded = load_base("tiny-arith", choose_placement())
    assert loaded.notice == f"base model tiny-arith: local folder {TINY}"
    model = attach_adapter(loaded.model, 4, None)
    model.save_pretrained(tmp_path)
    assert '"base_model_name_or_path": "tiny-arith"' in (tmp_path / "adapter_config.json").read_text()


def test_declared_eos_ids_merge_generation_config_and_tokenizer():
    loaded = load_base("tiny-arith", choose_placement())
    eos = loaded.tokenizer.eos_token_id
    loaded.model.generation_config.eos_token_id = [7, eos, 9]
    assert declared_eos_ids(loaded.model, loaded.tokenizer) == [7, eos, 9]
    loaded.model.generation_config.eos_token_id = None
    assert declared_eos_ids(loaded.model, loaded.tokenizer) == [eos]


@pytest.mark.slow
@pytest.mark.skipif(
    not PREPARED_GGUF.is_file(), reason="run scripts/prepare_real_model.py to try a real GGUF file"
)
def test_a_gguf_file_loads_dequantized_and_says_so():
    loaded = load_base(str(PREPARED_GGUF), choose_placement())
    assert "dequantized from GGUF to float32" in loaded.notice
    assert loaded.tokenizer.chat_template is not None


def test_rftlab_chat_says_why_a_model_cannot_load_without_a_traceback(tmp_path, capsys):
    from rftlab import cli

    assert cli.main(["chat", str(tmp_path / "no-such-model"), "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rftlab chat: base model") and "no such folder" in err
    assert "Traceback" not in err
