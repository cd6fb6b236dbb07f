"""Pointing games and reference specificity against ground-truth masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from captum_fam import metrics


def square_masks() -> torch.Tensor:
    masks = torch.zeros(2, 10, 10, dtype=torch.bool)
    masks[0, 1:4, 1:4] = True
    masks[1, 6:9, 5:9] = True
    return masks


def test_pointing_game_hand_cases():
    masks = square_masks()
    maps = masks.float().unsqueeze(1)
    assert metrics.pointing_game(maps, masks, tolerance=0).tolist() == [True, True]
    assert metrics.pointing_game(1 - maps, masks, tolerance=0).tolist() == [False, False]
    # constant and all-zero maps point nowhere: a miss
    assert metrics.pointing_game(torch.zeros(2, 10, 10), masks).tolist() == [False, False]
    assert metrics.pointing_game(torch.full((2, 1, 10, 10), 3.0), masks).tolist() == [
        False,
        False,
    ]
    # (N, 1, H, W) masks and a layer map upsampled to the mask size
    low = torch.zeros(2, 1, 2, 2)
    low[0, 0, 0, 0] = 1.0  # top-left quarter
    low[1, 0, 1, 1] = 1.0  # bottom-right quarter
    assert metrics.pointing_game(low, masks.unsqueeze(1), tolerance=0).tolist() == [True, True]


def test_pointing_game_tolerance_is_euclidean_distance_to_the_mask():
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, 5, 5] = True
    maps = torch.zeros(1, 20, 20)
    maps[0, 7, 7] = 1.0  # distance sqrt(8) = 2.83
    assert not metrics.pointing_game(maps, masks, tolerance=2.8).item()
    assert metrics.pointing_game(maps, masks, tolerance=2.9).item()
    # default: 5% of the side = 1 px
    assert not metrics.pointing_game(maps, masks).item()
    maps = torch.zeros(1, 20, 20)
    maps[0, 5, 6] = 1.0
    assert metrics.pointing_game(maps, masks).item()


@example(0, 0, 1.9999999999999991)  # just under a pixel distance: float32 would round it up
@example(0, 0, math.sqrt(2) - 1e-9)
@given(st.integers(0, 9), st.integers(0, 9), st.floats(0, 6))
def test_dilate_matches_the_distance_definition(row, col, tolerance):
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, row, col] = True
    grown = metrics.dilate(masks, tolerance)[0]
    yy, xx = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    expected = ((yy - row) ** 2 + (xx - col) ** 2).double() <= tolerance**2
    assert torch.equal(grown, expected)


def test_energy_pointing_game_hand_cases():
    masks = square_masks()
    maps = masks.float()
    torch.testing.assert_close(metrics.energy_pointing_game(maps, masks), torch.ones(2))
    torch.testing.assert_close(metrics.energy_pointing_game(1 - maps, masks), torch.zeros(2))
    share = masks.flatten(1).float().mean(1)
    torch.testing.assert_close(metrics.energy_pointing_game(torch.ones(2, 10, 10), masks), share)
    torch.testing.assert_close(
        metrics.energy_pointing_game(torch.zeros(2, 10, 10), masks), torch.zeros(2)
    )
    # negative evidence is ignored
    torch.testing.assert_close(metrics.energy_pointing_game(maps - 1, masks), torch.zeros(2))


def test_localisation_errors():
    masks = square_masks()
    empty = masks.clone()
    empty[1] = False
    with pytest.raises(ValueError, match=r"masks is empty .* \[1\]"):
        metrics.pointing_game(torch.rand(2, 10, 10), empty)
    with pytest.raises(ValueError, match="masks is empty"):
        metrics.energy_pointing_game(torch.rand(2, 10, 10), empty)
    with pytest.raises(ValueError, match="masks must be boolean"):
        metrics.pointing_game(torch.rand(2, 10, 10), torch.rand(2, 10, 10))
    with pytest.raises(ValueError, match="maps must have shape"):
        metrics.pointing_game(torch.rand(3, 10, 10), masks)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(torch.rand(2, 10, 10), masks, tolerance=-1)
    with pytest.raises(TypeError, match="maps must be a Tensor"):
        metrics.pointing_game(np.zeros((2, 10, 10)), masks)


# --- reference specificity ------------------------------------------------------------------


def test_reference_specificity():
    masks = square_masks().view(1, 2, 10, 10)
    a, b = masks[:, :1].float(), masks[:, 1:].float()
    assert metrics.reference_specificity(masks, maps=(a, b), tolerance=0).tolist() == [True]
    # a reference-agnostic map passes one of the two at most
    assert metrics.reference_specificity(masks, maps=(a, a), tolerance=0).tolist() == [False]
    assert metrics.reference_specificity(masks, maps=(b, a), tolerance=0).tolist() == [False]
    images = torch.rand(1, 3, 10, 10)
    by_fn = metrics.reference_specificity(
        masks, map_fn=lambda x, k: masks[:, k : k + 1].float(), images=images
    )
    assert by_fn.tolist() == [True]
    with pytest.raises(ValueError, match="exactly one of maps or map_fn"):
        metrics.reference_specificity(masks)
    with pytest.raises(ValueError, match="needs the images"):
        metrics.reference_specificity(masks, map_fn=lambda x, k: a)
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        metrics.reference_specificity(masks[:, 0], maps=(a, b))


# --- rank correlation, SSIM, randomisation ---------------------------------------------------
