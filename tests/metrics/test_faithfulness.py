"""Deletion, insertion, average drop and increase in confidence."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_fam import FeatureActivationMap, metrics


def pixel_sum(x: torch.Tensor) -> torch.Tensor:
    """A linear score whose curves are easy to compute by hand."""
    return x.sum(dim=(1, 2, 3))


@pytest.fixture
def four_pixels() -> torch.Tensor:
    return torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)


# --- deletion / insertion ---------------------------------------------------------------------


def test_deletion_and_insertion_by_hand(four_pixels):
    maps = four_pixels.clone()  # the most important pixel is the brightest
    dele = metrics.deletion(pixel_sum, four_pixels, maps, steps=4, fill=0.0)
    torch.testing.assert_close(dele.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(dele.curves, torch.tensor([[10.0, 6.0, 3.0, 1.0, 0.0]]))
    # trapezoid: 0.25 * (8 + 4.5 + 2 + 0.5)
    torch.testing.assert_close(dele.auc, torch.tensor([3.75]))
    ins = metrics.insertion(pixel_sum, four_pixels, maps, steps=4, fill=0.0)
    torch.testing.assert_close(ins.curves, torch.tensor([[0.0, 4.0, 7.0, 9.0, 10.0]]))
    torch.testing.assert_close(ins.auc, torch.tensor([6.25]))
    # The reversed map swaps the two areas: worst order for both curves.
    rev_del = metrics.deletion(pixel_sum, four_pixels, -maps, steps=4, fill=0.0)
    rev_ins = metrics.insertion(pixel_sum, four_pixels, -maps, steps=4, fill=0.0)
    torch.testing.assert_close(rev_del.auc, torch.tensor([6.25]))
    torch.testing.assert_close(rev_ins.auc, torch.tensor([3.75]))
    rel = metrics.deletion(pixel_sum, four_pixels, maps, steps=4, fill=0.0, relative=True)
    torch.testing.assert_close(rel.auc, torch.tensor([0.375]))
    rel_ins = metrics.insertion(pixel_sum, four_pixels, maps, steps=4, fill=0.0, relative=True)
    torch.testing.assert_close(rel_ins.auc, torch.tensor([0.625]))


def test_constant_map_removes_in_raster_order_and_fill_tensor(four_pixels):
    fill = torch.full((1, 1, 1, 1), 10.0)
    dele = metrics.deletion(pixel_sum, four_pixels, torch.zeros(1, 2, 2), steps=4, fill=fill)
    # raster order 1, 2, 3, 4 replaced by 10 each
    torch.testing.assert_close(dele.curves, torch.tensor([[10.0, 19.0, 27.0, 34.0, 40.0]]))


def test_layer_maps_are_upsampled_and_blur_fill_keeps_the_mean():
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    result = metrics.deletion(pixel_sum, images, maps, steps=5)
    assert result.curves.shape == (2, 6) and result.auc.shape == (2,)
    torch.testing.assert_close(result.curves[:, 0], pixel_sum(images))
    # reflect-padded normalised blur roughly preserves the total
    torch.testing.assert_close(result.curves[:, -1], pixel_sum(metrics.blur(images)))
    assert torch.allclose(result.curves[:, -1], pixel_sum(images), rtol=0.05)


@given(
    n=st.integers(1, 4),
    steps=st.integers(1, 7),
    batch_size=st.integers(1, 40),
    seed=st.integers(0, 1000),
)
def test_batching_pairs_every_perturbed_image_with_its_own_example(n, steps, batch_size, seed):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 2, 5, 5, generator=g)
    maps = torch.rand(n, 5, 5, generator=g)
    weights = torch.rand(n, 2, 5, 5, generator=g)

    def score_fn(x):  # pairs row t with example t // (len(x) // n), as FAM does
        rows = torch.arange(n).repeat_interleave(len(x) // n)
        return (x * weights[rows]).sum(dim=(1, 2, 3))

    result = metrics.deletion(score_fn, images, maps, steps=steps, fill=0.5, batch_size=batch_size)
    # By hand, one image and one step at a time.
    order = torch.argsort(-maps.flatten(1), dim=1, stable=True)
    for i in range(n):
        for k in range(steps + 1):
            count = round(k / steps * 25)
            removed = torch.zeros(25, dtype=torch.bool)
            removed[order[i, :count]] = True
            x = torch.where(removed.view(1, 5, 5), torch.tensor(0.5), images[i])
            expected = (x * weights[i]).sum()
            torch.testing.assert_close(result.curves[i, k], expected, rtol=1e-5, atol=1e-5)


def test_fam_score_fn_batches_like_single_steps(tiny_model, images, references):
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    rows = fam.embed(references)
    maps = fam.attribute(images, reference_embeddings=rows)

    def score_fn(x):
        return fam.similarity_scores(x, reference_embeddings=rows)

    one_step = metrics.insertion(score_fn, images, maps, steps=6, batch_size=4)
    chunked = metrics.insertion(score_fn, images, maps, steps=6, batch_size=64)
    torch.testing.assert_close(one_step.curves, chunked.curves)
    torch.testing.assert_close(chunked.curves[:, -1], score_fn(images))


def test_perturbation_curve_errors(four_pixels):
    with pytest.raises(ValueError, match="steps"):
        metrics.deletion(pixel_sum, four_pixels, four_pixels, steps=0)
    with pytest.raises(ValueError, match="fill"):
        metrics.deletion(pixel_sum, four_pixels, four_pixels, fill="noise")
    with pytest.raises(ValueError, match="maps"):
        metrics.deletion(pixel_sum, four_pixels, torch.rand(2, 1, 2, 2))
    with pytest.raises(ValueError, match="maps contains NaN"):
        metrics.insertion(pixel_sum, four_pixels, torch.full((1, 2, 2), math.nan))
    with pytest.raises(TypeError, match="score_fn"):
        metrics.deletion(None, four_pixels, four_pixels)
    with pytest.raises(ValueError, match="one score per image"):
        metrics.deletion(lambda x: x.sum(), four_pixels, four_pixels)
    with pytest.raises(ValueError, match="relative=True"):
        metrics.deletion(lambda x: -pixel_sum(x), four_pixels, four_pixels, relative=True)
    with pytest.raises(ValueError, match="images"):
        metrics.insertion(pixel_sum, torch.rand(3, 4), four_pixels)


# --- average drop / increase in confidence --------------------------------------------------


def test_average_drop_and_increase_by_hand(four_pixels):
    # A constant map keeps the image: no drop, no increase.
    ones = torch.ones(1, 1, 2, 2)
    torch.testing.assert_close(metrics.average_drop(pixel_sum, four_pixels, ones), torch.zeros(1))
    assert not metrics.increase_in_confidence(pixel_sum, four_pixels, ones).any()
    # The image as map: E = x * x / 4 = [0.25, 1, 2.25, 4], sum 7.5: drop (10 - 7.5) / 10.
    drop = metrics.average_drop(pixel_sum, four_pixels, four_pixels)
    torch.testing.assert_close(drop, torch.tensor([0.25]))
    # An all-zero map shows nothing: E is blank, the whole score is lost.
    torch.testing.assert_close(
        metrics.average_drop(pixel_sum, four_pixels, torch.zeros(1, 2, 2)), torch.ones(1)
    )

    # A score that rewards hiding the top-left pixel increases.
    def score_fn(x):
        return 20 - x[:, 0, 0, 0] * 10 + x[:, 0, 1, 1]

    increased = metrics.increase_in_confidence(score_fn, four_pixels, four_pixels)
    assert increased.tolist() == [True]
    torch.testing.assert_close(
        metrics.average_drop(score_fn, four_pixels, four_pixels), torch.zeros(1)
    )


def test_average_drop_needs_positive_scores(four_pixels):
    def cosine_like(x):
        return pixel_sum(x) / 10 - 1.5  # -0.5 on the image

    with pytest.raises(ValueError, match="score_offset"):
        metrics.average_drop(cosine_like, four_pixels, four_pixels)
    # shifted by 1: Y(x) = 0.5, Y(E) = max(0, 0.75 - 1.5 + 1) = 0.25
    drop = metrics.average_drop(cosine_like, four_pixels, four_pixels, score_offset=1.0)
    torch.testing.assert_close(drop, torch.tensor([0.5]))
    # Y(E) is clamped at zero: a drop never exceeds 1.
    drop = metrics.average_drop(cosine_like, four_pixels, torch.zeros(1, 2, 2), score_offset=1.0)
    torch.testing.assert_close(drop, torch.ones(1))


# --- pointing game and energy ------------------------------------------------------------------
