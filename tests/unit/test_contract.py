"""One wire contract: the launcher's Fireworks-default presets, the local backend's schema and the engine's settings
all agree with `rftlab.fireworks.contract`, and the launcher refuses what a backend would refuse."""

from dataclasses import asdict

import pytest
import yaml

from rftlab.fireworks import contract
from rftlab.fireworks.contract import DEFAULTS
from rftlab.launch.plan import build_plan
from rftlab.launch.spec import SpecError
from rftlab.paths import conf_dir
from rftlab.server.job_spec import settings_for
from rftlab.server.schemas import JobRequest


def test_the_fireworks_default_presets_are_the_contracts_defaults():
    training = yaml.safe_load((conf_dir() / "training" / "fireworks_default.yaml").read_text())
    sampling = yaml.safe_load((conf_dir() / "sampling" / "fireworks_default.yaml").read_text())
    defaults = asdict(DEFAULTS)
    for key, value in {**training, **sampling}.items():
        if key in defaults and value is not None:  # null: left to the backend
            assert value == defaults[key], key
    assert training["kl_beta"] == contract.DEFAULT_KL_BETA[training["loss_method"]]


def test_the_server_fills_every_unset_field_with_the_contracts_default():
    job = JobRequest.model_validate(
        {"dataset": "d", "evaluator": "e", "trainingConfig": {"baseModel": "m"}}
    ).dump()
    training, inference = job["trainingConfig"], job["inferenceParameters"]
    assert training["epochs"] == DEFAULTS.epochs and training["learningRate"] == DEFAULTS.learning_rate
    assert training["loraRank"] == DEFAULTS.lora_rank and training["batchSize"] == DEFAULTS.batch_size
    assert training["maxContextLength"] == DEFAULTS.max_context_length
    assert training["optimizerWeightDecay"] == DEFAULTS.optimizer_weight_decay
    assert inference["temperature"] == DEFAULTS.temperature and inference["topK"] == DEFAULTS.top_k
    assert inference["maxOutputTokens"] == DEFAULTS.max_output_tokens
    assert inference["responseCandidatesCount"] == DEFAULTS.response_candidates_count
    assert job["lossConfig"] == {"method": "GRPO", "klBeta": contract.DEFAULT_KL_BETA["grpo"]}
    assert job["chunkSize"] == DEFAULTS.chunk_size and job["evalAutoCarveout"] is DEFAULTS.eval_auto_carveout
    settings = settings_for({})
    assert (
        settings.training.epochs == DEFAULTS.epochs
        and settings.candidates == DEFAULTS.response_candidates_count
    )


@pytest.mark.parametrize("spelling", ["GRPO", "grpo", "DAPO", "gspo-token", "GSPO_TOKEN", "gspo_token"])
def test_every_loss_method_spelling_reaches_one_wire_name(spelling):
    method = contract.loss_method(spelling)
    assert contract.LOSS_METHODS[method] == spelling.upper().replace("-", "_")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("training.learning_rate", 5.0),
        ("sampling.response_candidates_count", 1000),
        ("training.lora_rank", 512),
        ("training.epochs", 0),
    ],
)
def test_the_launcher_refuses_what_the_local_backend_refuses(key, value, compose_config, tmp_path):
    with pytest.raises(SpecError) as caught:
        build_plan(compose_config([f"{key}={value}", "dry_run=true"]), cwd=tmp_path)
    assert [problem.key for problem in caught.value.problems] == [key]
    section, _, field = key.partition(".")
    camel = {"learning_rate": "learningRate", "response_candidates_count": "responseCandidatesCount"}
    body = {"dataset": "d", "evaluator": "e", "trainingConfig": {"baseModel": "m"}}
    wire_section = "trainingConfig" if section == "training" else "inferenceParameters"
    body.setdefault(wire_section, {})
    body[wire_section][camel.get(field, {"lora_rank": "loraRank", "epochs": "epochs"}.get(field))] = value
    with pytest.raises(ValueError):
        JobRequest.model_validate(body)


def test_hosted_ranges_apply_only_to_the_hosted_backend(compose_config, tmp_path):
    rank_64 = ["training.lora_rank=64", "dry_run=true"]
    assert build_plan(compose_config(rank_64), cwd=tmp_path).body["trainingConfig"]["loraRank"] == 64
    with pytest.raises(SpecError, match=r"training.lora_rank=64: must be at most 32 .* on Fireworks"):
        build_plan(compose_config([*rank_64, "backend=fireworks", "backend.account_id=a"]), cwd=tmp_path)
