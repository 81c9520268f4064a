"""The stored job as the engine's settings: defaults from the contract, loss methods, extraBody, refusals that
name the field; and model names."""

import pytest

from rftlab.engine.api import JobFailed
from rftlab.engine.models import resolve_model_source
from rftlab.engine.settings import ToolSettings
from rftlab.fireworks.contract import DEFAULT_EVAL_PASSES, DEFAULTS
from rftlab.paths import ASSETS_DIR
from rftlab.server.job_spec import engine_settings, settings_for
from rftlab.server.schemas import JobRequest


def test_unset_fields_take_the_contracts_defaults():
    settings = settings_for({})
    assert settings.training.epochs == DEFAULTS.epochs == 1
    assert settings.training.learning_rate == DEFAULTS.learning_rate == 1e-4
    assert settings.training.lora_rank == DEFAULTS.lora_rank == 8
    assert settings.training.batch_tokens == DEFAULTS.batch_size == 32768
    assert settings.training.loss_method == "grpo"
    assert settings.training.kl_beta == 0.001
    assert (settings.sampling.temperature, settings.sampling.top_p, settings.sampling.top_k) == (0.7, 1.0, 40)
    assert settings.sampling.max_output_tokens == DEFAULTS.max_output_tokens
    assert settings.candidates == 8
    assert settings.chunk_size == 200
    assert settings.eval_auto_carveout is True
    assert settings.eval_passes == DEFAULT_EVAL_PASSES == ("sampled",)


def test_eval_passes_reach_the_settings_and_a_job_stored_without_them_gets_the_default():
    assert settings_for({"evalPasses": ["greedy"]}).eval_passes == ("greedy",)
    assert settings_for({"evalPasses": ["greedy", "sampled"]}).eval_passes == ("greedy", "sampled")
    stored = JobRequest.model_validate(
        {"dataset": "d", "evaluator": "e", "trainingConfig": {"baseModel": "tiny-arith"}}
    ).dump()
    assert "evalPasses" not in stored
    assert engine_settings(stored).eval_passes == DEFAULT_EVAL_PASSES


def test_legacy_aliases_and_enum_spellings_are_accepted():
    settings = settings_for(
        {"inferenceParameters": {"n": 4, "maxTokens": 16}, "lossConfig": {"method": "GSPO_TOKEN"}}
    )
    assert (settings.candidates, settings.sampling.max_output_tokens) == (4, 16)
    assert (settings.training.loss_method, settings.training.kl_beta) == ("gspo-token", 0.0)


def test_max_output_tokens_zero_means_the_default():
    assert settings_for({"inferenceParameters": {"maxOutputTokens": 0}}).sampling.max_output_tokens == 2048


def test_extra_body_stop_is_read_from_a_json_string_or_an_object():
    assert settings_for({"inferenceParameters": {"extraBody": '{"stop": ["\\n"]}'}}).sampling.stop == ("\n",)
    assert settings_for({"inferenceParameters": {"extraBody": {"stop": "END"}}}).sampling.stop == ("END",)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"inferenceParameters": {"extraBody": '{"stop": ["x"], "logit_bias": {}}'}}, "key(s) 'logit_bias'"),
        ({"inferenceParameters": {"extraBody": '{"stop": [""]}'}}, "non-empty strings"),
        (
            {"inferenceParameters": {"extraBody": {"max_turns": 3}}},
            "max_turns: only for a job with an mcpServer",
        ),
    ],
)
def test_unsupported_settings_fail_the_job_with_the_field_named(job, message):
    with pytest.raises(JobFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_for(job)


def test_tool_rollout_knobs_come_from_extra_body_for_a_job_with_an_mcp_server():
    spec = JobRequest.model_validate(
        {
            "dataset": "d",
            "evaluator": "e",
            "trainingConfig": {"baseModel": "tiny-arith"},
            "inferenceParameters": {"extraBody": {"max_turns": 3, "tool_call_timeout_s": 2.5}},
        }
    ).dump()
    tools = engine_settings(spec, ToolSettings("http://127.0.0.1:1/mcp")).tools
    assert (tools.max_turns, tools.call_timeout_s, tools.max_result_tokens) == (3, 2.5, 256)
    assert (
        engine_settings(
            {**spec, "inferenceParameters": {**spec["inferenceParameters"], "extraBody": None}}, None
        ).tools
        is None
    )
    bad = {**spec, "inferenceParameters": {**spec["inferenceParameters"], "extraBody": '{"max_turns": 0}'}}
    with pytest.raises(JobFailed, match="max_turns must be a positive number"):
        engine_settings(bad, ToolSettings("http://127.0.0.1:1/mcp"))


def test_model_names_resolve_to_local_folders_or_hub_repos(tmp_path):
    assert resolve_model_source("tiny-arith") == str(ASSETS_DIR / "tiny-arith")
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    assert resolve_model_source("accounts/fireworks/models/qwen3-8b") == "Qwen/Qwen3-8B"
    assert resolve_model_source("llama-v3-8b-instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert resolve_model_source("accounts/fireworks/models/qwen2p5-7b-instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model_source("org/some-model") == "org/some-model"
    with pytest.raises(JobFailed, match="no Hugging Face equivalent"):
        resolve_model_source("accounts/fireworks/models/not-a-model")
