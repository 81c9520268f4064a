"""Job request parsing: Fireworks defaults, legacy aliases, loss-method spellings and range checks."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from rftlab.server.errors import describe_validation_errors
from rftlab.server.schemas import JobRequest

BASE = {"dataset": "d", "evaluator": "e", "trainingConfig": {"baseModel": "tiny-arith"}}


def parse(**changes) -> dict:
    return JobRequest.model_validate({**BASE, **changes}).dump()


def problems(**changes) -> str:
    with pytest.raises(ValidationError) as error:
        parse(**changes)
    return describe_validation_errors(error.value.errors())


def test_defaults_fill_every_unset_knob():
    job = parse()
    assert job["inferenceParameters"] == {
        "maxOutputTokens": 2048,
        "temperature": 0.7,
        "topP": 1.0,
        "topK": 40,
        "responseCandidatesCount": 8,
    }
    assert (job["trainingConfig"]["epochs"], job["trainingConfig"]["learningRate"]) == (1, 1e-4)
    assert (job["trainingConfig"]["loraRank"], job["trainingConfig"]["batchSize"]) == (8, 32768)
    assert job["lossConfig"] == {"method": "GRPO", "klBeta": 0.001}
    assert (job["chunkSize"], job["evalAutoCarveout"]) == (200, True)


def test_legacy_names_fold_into_the_current_ones():
    job = parse(inferenceParameters={"maxTokens": 100, "n": 4})
    assert job["inferenceParameters"]["maxOutputTokens"] == 100
    assert job["inferenceParameters"]["responseCandidatesCount"] == 4
    assert "maxTokens" not in job["inferenceParameters"] and "n" not in job["inferenceParameters"]
    same = parse(inferenceParameters={"maxTokens": 100, "maxOutputTokens": 100})
    assert same["inferenceParameters"]["maxOutputTokens"] == 100
    assert "maxTokens (legacy) and maxOutputTokens disagree (100 vs 50)" in problems(
        inferenceParameters={"maxTokens": 100, "maxOutputTokens": 50}
    )


@pytest.mark.parametrize(
    ("method", "canonical", "kl"),
    [
        ("grpo", "GRPO", 0.001),
        ("DAPO", "DAPO", 0.0),
        ("gspo-token", "GSPO_TOKEN", 0.0),
        ("METHOD_UNSPECIFIED", "GRPO", 0.001),
    ],
)
def test_loss_method_spellings(method, canonical, kl):
    assert parse(lossConfig={"method": method})["lossConfig"] == {"method": canonical, "klBeta": kl}


def test_an_explicit_kl_beta_is_kept_for_grpo_and_refused_elsewhere():
    assert parse(lossConfig={"method": "grpo", "klBeta": 0.05})["lossConfig"]["klBeta"] == 0.05
    assert "klBeta must be 0/unset when method is GSPO_TOKEN" in problems(
        lossConfig={"method": "gspo-token", "klBeta": 0.1}
    )


def test_extra_body_must_be_a_json_object_and_a_dict_is_serialised():
    assert json.loads(
        parse(inferenceParameters={"extraBody": {"stop": ["\n"]}})["inferenceParameters"]["extraBody"]
    ) == {"stop": ["\n"]}
    assert "inferenceParameters.extraBody: must be a JSON object" in problems(
        inferenceParameters={"extraBody": "{oops"}
    )


def test_chunk_size_zero_means_default_and_minus_one_disables():
    assert parse(chunkSize=0)["chunkSize"] == 200
    assert parse(chunkSize=-1)["chunkSize"] == -1
    assert "chunkSize: must be 1..10000" in problems(chunkSize=-5)


def test_exactly_one_starting_point():
    assert "set exactly one of" in problems(
        trainingConfig={"baseModel": "a", "warmStartFrom": "accounts/x/models/m"}
    )
    assert "set exactly one of" in problems(trainingConfig={})


def test_output_only_fields_are_ignored_and_unknown_ones_refused():
    job = parse(
        name="accounts/a/reinforcementFineTuningJobs/x", state="JOB_STATE_RUNNING", jobProgress={"percent": 3}
    )
    assert "state" not in job and "name" not in job
    assert "colour: unknown field" in problems(colour="blue")
    assert "wandbConfig.apikey: unknown field" in problems(wandbConfig={"apikey": "x"})


def test_wandb_mode_is_an_accepted_local_extension():
    job = JobRequest.model_validate({**BASE, "wandbConfig": {"enabled": True, "mode": "offline"}}).dump()
    assert job["wandbConfig"] == {"enabled": True, "mode": "offline"}


def test_eval_passes_are_a_local_extension_checked_by_name():
    assert parse(evalPasses=["greedy", "sampled"])["evalPasses"] == ["greedy", "sampled"]
    assert (
        "evalPasses" not in parse()
    )  # the default is not echoed: a job copied to Fireworks must not carry it
    assert "evalPasses: unknown pass 'beam': must be a non-empty list of sampled and/or greedy" in problems(
        evalPasses=["beam"]
    )
    assert "evalPasses: lists a pass twice" in problems(evalPasses=["greedy", "greedy"])
    assert "evalPasses: must be a non-empty list" in problems(evalPasses=[])
    assert "evalPasses: Input should be a valid list" in problems(evalPasses="greedy")
