"""Combining activation maps with channel weights, in every rank."""

from __future__ import annotations

import pytest
import torch

from captum_fam import combine_activation_maps


@pytest.mark.parametrize("positions", [(7,), (3, 4), (2, 3, 4)])
def test_weighted_sum_over_channels(positions):
    activations = torch.randn(2, 5, *positions)
    weights = torch.randn(2, 5)
    raw = combine_activation_maps(activations, weights, False, False)
    expected = (weights.view(2, 5, *([1] * len(positions))) * activations).sum(1, keepdim=True)
    torch.testing.assert_close(raw, expected)
    normalized = combine_activation_maps(activations, weights, True, True)
    total = weights.abs().sum(1).view(2, 1, *([1] * len(positions)))
    torch.testing.assert_close(normalized, (expected / total).relu())


def test_all_zero_weights_give_an_all_zero_map():
    maps = combine_activation_maps(torch.rand(1, 3, 2, 2), torch.zeros(1, 3))
    assert torch.equal(maps, torch.zeros(1, 1, 2, 2))
