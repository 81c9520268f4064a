"""Reading the job's knobs: defaults, loss methods, extraBody, refusals that name the field."""

import pytest

from rftlab.engine.api import JobFailed
from rftlab.engine.models import resolve_model_source
from rftlab.engine.settings import job_settings
from rftlab.paths import ASSETS_DIR


def test_unset_fields_take_fireworks_defaults():
    settings = job_settings({})
    assert settings.training.epochs == 1
    assert settings.training.learning_rate == 1e-4
    assert settings.training.lora_rank == 8
    assert settings.training.batch_tokens == 32768
    assert settings.training.loss_method == "grpo"
    assert settings.training.kl_beta == 0.001
    assert (settings.sampling.temperature, settings.sampling.top_p, settings.sampling.top_k) == (0.7, 1.0, 40)
    assert settings.candidates == 8
    assert settings.chunk_size == 200
    assert settings.eval_auto_carveout is True


def test_legacy_aliases_and_enum_spellings_are_accepted():
    settings = job_settings(
        {"inferenceParameters": {"n": 4, "maxTokens": 16}, "lossConfig": {"method": "GSPO_TOKEN"}}
    )
    assert (settings.candidates, settings.sampling.max_output_tokens) == (4, 16)
    assert (settings.training.loss_method, settings.training.kl_beta) == ("gspo-token", 0.0)


def test_extra_body_stop_is_read_from_a_json_string_or_an_object():
    assert job_settings({"inferenceParameters": {"extraBody": '{"stop": ["\\n"]}'}}).sampling.stop == ("\n",)
    assert job_settings({"inferenceParameters": {"extraBody": {"stop": "END"}}}).sampling.stop == ("END",)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"inferenceParameters": {"extraBody": '{"stop": ["x"], "logit_bias": {}}'}}, "key(s) 'logit_bias'"),
        ({"inferenceParameters": {"extraBody": "{not json"}}, "extraBody is not valid JSON"),
        ({"inferenceParameters": {"responseCandidatesCount": 1}}, "at least 2"),
        ({"lossConfig": {"method": "dapo", "klBeta": 0.1}}, "klBeta must be 0 or unset"),
        ({"lossConfig": {"method": "ppo"}}, "lossConfig.method 'ppo'"),
        ({"mcpServer": "accounts/a/mcpServers/m"}, "MCP tool rollouts are not supported yet"),
    ],
)
def test_unsupported_settings_are_refused_with_the_field_named(job, message):
    with pytest.raises(JobFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        job_settings(job)


def test_model_names_resolve_to_local_folders_or_hub_repos(tmp_path):
    assert resolve_model_source("tiny-arith") == str(ASSETS_DIR / "tiny-arith")
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    assert resolve_model_source("accounts/fireworks/models/qwen3-8b") == "Qwen/Qwen3-8B"
    assert resolve_model_source("llama-v3-8b-instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert resolve_model_source("accounts/fireworks/models/qwen2p5-7b-instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model_source("org/some-model") == "org/some-model"
    with pytest.raises(JobFailed, match="no Hugging Face equivalent"):
        resolve_model_source("accounts/fireworks/models/not-a-model")
