"""captum_fam.metrics: hand-computed cases, edge cases, Quantus cross-check."""

from __future__ import annotations

import math
import warnings

import numpy as np
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


@given(st.integers(0, 9), st.integers(0, 9), st.floats(0, 6))
def test_dilate_matches_the_distance_definition(row, col, tolerance):
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, row, col] = True
    grown = metrics.dilate(masks, tolerance)[0]
    yy, xx = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    expected = ((yy - row) ** 2 + (xx - col) ** 2).float() <= tolerance**2
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


def test_spearman_hand_cases():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(metrics.spearman(x, x**3), torch.ones(1))
    torch.testing.assert_close(metrics.spearman(x, -x), -torch.ones(1))
    ties = metrics.spearman(torch.tensor([[1.0, 1.0, 2.0]]), torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(ties, torch.tensor([1.5 / math.sqrt(3)]))
    torch.testing.assert_close(metrics.spearman(torch.zeros(1, 4), x), torch.zeros(1))


def _numpy_spearman(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(1, len(v) + 1)
        for value in np.unique(v):  # average the ranks of ties
            r[v == value] = r[v == value].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


@given(
    st.lists(st.integers(-3, 3), min_size=2, max_size=12).flatmap(
        lambda a: st.tuples(
            st.just(a), st.lists(st.integers(-3, 3), min_size=len(a), max_size=len(a))
        )
    )
)
def test_spearman_matches_a_reference_implementation(pair):
    a, b = (np.array(v, dtype=float) for v in pair)
    ours = metrics.spearman(torch.tensor(a)[None], torch.tensor(b)[None]).item()
    assert ours == pytest.approx(_numpy_spearman(a, b), abs=1e-5)


def test_ssim_identity_and_difference():
    maps = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(metrics.ssim(maps, maps), torch.ones(3))
    assert (metrics.ssim(maps, 1 - maps) < 0).all()


def test_randomization_check(tiny_model, images, references):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}

    def explain(model):
        fam = FeatureActivationMap(model, model.block)
        return fam.attribute(images, reference=references)  # references re-embedded

    result = metrics.randomization_check(explain, tiny_model, compute_ssim=True)
    assert result.layers == ["block.0", "stem.0"]  # top first
    assert result.spearman.shape == (2, 4) and result.ssim.shape == (2, 4)
    assert (result.spearman < 0.99).all()
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key])  # the model is untouched
    # A map that ignores the model fails the sanity check: correlation stays 1.
    fixed = torch.rand(4, 1, 6, 6)
    blind = metrics.randomization_check(lambda m: fixed, tiny_model, layers=["block", "stem"])
    torch.testing.assert_close(blind.spearman, torch.ones(2, 4))
    assert blind.ssim is None
    with pytest.raises(ValueError, match="not modules"):
        metrics.randomization_check(explain, tiny_model, layers=["head"])
    # deterministic for a seed
    again = metrics.randomization_check(explain, tiny_model, compute_ssim=True)
    torch.testing.assert_close(again.spearman, result.spearman)


# --- SimilarityHead and Quantus ------------------------------------------------------------------


def test_similarity_head_matches_fam_scores(tiny_model, images, references):
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    head = metrics.SimilarityHead(tiny_model, references=references[:3]).eval()
    scores = head(images)
    assert scores.shape == (4, 3)
    for k in range(3):
        expected = fam.similarity_scores(images, reference=references[k : k + 1])
        torch.testing.assert_close(scores[:, k], expected)
    with pytest.raises(ValueError, match="exactly one of references or reference_embeddings"):
        metrics.SimilarityHead(tiny_model)
    with pytest.raises(ValueError, match="reference_embeddings have 2"):
        metrics.SimilarityHead(tiny_model, reference_embeddings=torch.rand(3, 2))(images)


def test_quantus_pointing_game_gives_the_same_hits(tiny_model):
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(0)
    n, size = 12, 12
    x = torch.rand(n, 3, size, size, generator=g)
    head = metrics.SimilarityHead(tiny_model, references=torch.rand(3, 3, size, size, generator=g))
    # layer-resolution maps (ties included after upsampling), upsampled as pointing_game does
    maps = torch.rand(n, 1, 6, 6, generator=g).round(decimals=1)
    maps[0] = 0.2  # a map with ties everywhere but not constant after the next line
    maps[0, 0, 0, 0] = 0.9
    upsampled = torch.nn.functional.interpolate(maps, (size, size), mode="bilinear")
    masks = torch.rand(n, 1, size, size, generator=g) > 0.7
    masks[:, 0, 0, 0] = True
    ours = metrics.pointing_game(maps, masks, tolerance=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.PointingGame(disable_warnings=True)(
            model=head,
            x_batch=x.numpy(),
            y_batch=np.arange(n) % 3,
            a_batch=upsampled.numpy(),
            s_batch=masks.float().numpy(),
            softmax=False,
        )
    assert [bool(v) for v in theirs] == ours.tolist()
    assert 0 < sum(ours.tolist()) < n  # both outcomes occur
