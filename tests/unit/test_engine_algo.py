"""Group advantages and the GRPO-family losses, against values computed by hand."""

import math

import pytest
import torch

from rftlab.engine.algo import (
    clipped_surrogate_N,
    group_advantages,
    gspo_token_ratio_N,
    kl_k3_N,
    loss_spec,
    policy_loss_N,
)


def test_advantages_are_reward_minus_mean_over_std_within_each_group():
    advantages, dropped = group_advantages([[1.0, 0.0, 0.0, 1.0]])
    # mean 0.5, sample std sqrt(1/3) = 0.57735
    expected = 0.5 / (math.sqrt(1 / 3) + 1e-4)
    assert dropped == 0
    assert advantages[0] == pytest.approx([expected, -expected, -expected, expected])


def test_equal_reward_groups_and_groups_with_one_valid_rollout_are_dropped():
    advantages, dropped = group_advantages([[1.0, 1.0, 1.0], [None, 1.0, 0.0], [None, 0.5], [0.2, 0.2, None]])
    assert dropped == 3
    assert advantages[0] == [None, None, None]
    assert advantages[1][0] is None
    assert advantages[1][1:] == pytest.approx([0.5 / (math.sqrt(0.5) + 1e-4), -0.5 / (math.sqrt(0.5) + 1e-4)])
    assert advantages[2] == [None, None]
    assert advantages[3] == [None, None, None]


RATIO_N = torch.tensor([1.5, 0.5, 1.1, 0.7])
ADVANTAGES_N = torch.tensor([1.0, -1.0, -2.0, 2.0])


def test_clipped_surrogate_takes_the_pessimistic_side_symmetric_clip():
    loss_N, clipped_N = clipped_surrogate_N(RATIO_N, ADVANTAGES_N, 0.2, 0.2)
    # 1.5*1 vs 1.2*1 -> 1.2; 0.5*-1 vs 0.8*-1 -> -0.8; 1.1*-2 unclipped; 0.7*2 vs 0.8*2 -> 1.4 (ratio low, A > 0)
    assert loss_N.tolist() == pytest.approx([-1.2, 0.8, 2.2, -1.4])
    assert clipped_N.tolist() == [True, True, False, False]


def test_clip_higher_lets_positive_advantages_push_further():
    loss_N, clipped_N = clipped_surrogate_N(RATIO_N, ADVANTAGES_N, 0.2, 0.28)
    assert loss_N.tolist() == pytest.approx([-1.28, 0.8, 2.2, -1.4])
    assert clipped_N.tolist() == [True, True, False, False]


def test_k3_kl_estimator():
    kl_N = kl_k3_N(torch.log(torch.tensor([0.5, 0.3])), torch.log(torch.tensor([0.25, 0.3])))
    # d = log(0.25/0.5): exp(d) - d - 1 = 0.5 + ln 2 - 1
    assert kl_N.tolist() == pytest.approx([0.5 + math.log(2) - 1, 0.0], abs=1e-6)


def test_gspo_token_ratio_is_the_sequence_ratio_with_per_token_gradients():
    logprobs_N = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    old_logprobs_N = torch.tensor([-1.2, -2.4, -0.7])
    ratio_N = gspo_token_ratio_N(logprobs_N, old_logprobs_N, torch.tensor([0, 0, 1]), 2)
    # sequence 0: mean log-ratio (0.2 + 0.4) / 2 = 0.3; sequence 1: 0.2
    assert ratio_N.tolist() == pytest.approx([math.exp(0.3), math.exp(0.3), math.exp(0.2)])
    ratio_N.sum().backward()
    assert logprobs_N.grad.tolist() == pytest.approx([math.exp(0.3), math.exp(0.3), math.exp(0.2)])


def test_gspo_clip_range_is_tight():
    spec = loss_spec("gspo-token", 0.0)
    logprobs_N = torch.tensor([-1.0, -2.0])
    loss_N, _, clipped_N = policy_loss_N(
        spec, logprobs_N, logprobs_N - 0.01, torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), 1
    )
    # ratio exp(0.01) = 1.01005 is clipped to 1 + 4e-4
    assert loss_N.tolist() == pytest.approx([-(1 + 4e-4), -(1 + 4e-4)])
    assert clipped_N.all()


def test_grpo_adds_beta_times_kl_and_dapo_has_no_kl():
    logprobs_N = torch.log(torch.tensor([0.5]))
    ref_logprobs_N = torch.log(torch.tensor([0.25]))
    advantages_N = torch.tensor([2.0])
    ids_N = torch.tensor([0])
    grpo = loss_spec("grpo", 0.1)
    loss_N, kl_N, _ = policy_loss_N(grpo, logprobs_N, logprobs_N, advantages_N, ids_N, 1, ref_logprobs_N)
    kl = 0.5 + math.log(2) - 1
    assert kl_N.tolist() == pytest.approx([kl], abs=1e-6)
    assert loss_N.tolist() == pytest.approx([-2.0 + 0.1 * kl], abs=1e-6)
    assert loss_spec("dapo", 0.1).kl_beta == 0.0


def test_on_policy_gradient_is_minus_advantage_times_score_function():
    logprobs_N = torch.tensor([-0.7, -1.3], requires_grad=True)
    loss_N, _, _ = policy_loss_N(
        loss_spec("dapo", 0.0),
        logprobs_N,
        logprobs_N.detach(),
        torch.tensor([0.5, -1.5]),
        torch.tensor([0, 1]),
        2,
    )
    loss_N.sum().backward()
    assert logprobs_N.grad.tolist() == pytest.approx([-0.5, 1.5])
