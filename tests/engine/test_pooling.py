"""Masked mean pooling and pooling masks."""

from __future__ import annotations

import pytest
import torch

from captum_fam._engine.pooling import check_mask, mask_from_inputs, masked_mean


def test_masked_mean_is_the_mean_over_valid_positions():
    activations = torch.arange(12.0).reshape(1, 2, 6)
    mask = torch.tensor([[True, True, False, True, False, False]])
    torch.testing.assert_close(masked_mean(activations, mask), torch.tensor([[4 / 3, 22 / 3]]))
    torch.testing.assert_close(masked_mean(activations, None), activations.mean(dim=2))
    grid = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(masked_mean(grid, torch.ones(2, 4, 5, dtype=torch.bool)),
                               grid.mean(dim=(2, 3)))  # fmt: skip


def test_masks_come_from_a_tensor_or_an_input_index():
    ids, mask = torch.ones(2, 3, dtype=torch.long), torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert mask_from_inputs(1, (ids, mask), "inputs") is mask
    assert mask_from_inputs(-1, (ids, mask), "reference") is mask
    assert mask_from_inputs(mask, (ids,), "inputs") is mask
    assert mask_from_inputs(None, (ids,), "inputs") is None
    checked = check_mask(mask, (2, 3), "inputs")
    assert checked.dtype == torch.bool and checked.tolist() == [[True, True, False]] * 1 + [
        [True, False, False]
    ]


def test_mask_errors_name_the_side():
    with pytest.raises(ValueError, match="pooling_mask of foil has shape"):
        check_mask(torch.ones(2, 4), (2, 3), "foil")
    with pytest.raises(TypeError, match="pooling_mask must be a tensor"):
        check_mask([1, 0], (1, 2), "inputs")
    with pytest.raises(ValueError, match="is a tensor, which masks the queries only"):
        mask_from_inputs(torch.ones(1, 2), (torch.ones(1, 2),), "background")
    with pytest.raises(TypeError, match="pooling_mask must be a"):
        mask_from_inputs(True, (torch.ones(1, 2),), "inputs")
