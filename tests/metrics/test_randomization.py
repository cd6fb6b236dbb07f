"""Cascading parameter randomisation, Spearman and SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_fam import FeatureActivationMap, metrics


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
