"""Token pairs: the exact pair decomposition of mean-pooled dot and cosine scores."""

from __future__ import annotations

import pytest
import torch
from helpers import ActivationModel
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.tasks import explain_pair

# Drawn sequences may have one token; the library says so, and these tests know.
pytestmark = pytest.mark.filterwarnings("ignore:the layer's output has a single position")
RAW = {"relu_attributions": False, "normalize_weights": False}
TOLERANCE = {"atol": 1e-10, "rtol": 1e-8}


class LinearHead(nn.Module):
    """Masked mean of the activations, then an affine projection: o = W mean(A) + b."""

    def __init__(self, channels: int, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.pool = ActivationModel()
        self.project = nn.Linear(channels, dim, bias=bias).double()

    def forward(self, activations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(activations, mask))


class FirstToken(nn.Module):
    """Class-token pooling: the first position's state, not a function of the mean."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()

    def forward(self, activations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.layer(activations)[:, :, 0]


class Normalized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = ActivationModel()

    def forward(self, activations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.pool(activations, mask), dim=1)


def padded(n, c, t, generator):
    """(N, C, T) float64 token states and a (N, T) mask with 1 to T valid tokens per row."""
    states = torch.randn(n, c, t, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=generator)
    return states, (torch.arange(t)[None] < lengths[:, None]).long()


def pooled(states, mask):
    weights = mask[:, None].double()
    return (states * weights).sum(2) / weights.sum(2)


@given(
    st.integers(1, 3),
    st.integers(1, 6),
    st.integers(1, 7),
    st.integers(1, 7),
    st.sampled_from(["cosine", "dot"]),
    st.sampled_from(["output", "layer"]),
    st.sampled_from(["reference", "contribution"]),
    st.integers(0, 2**31 - 1),
)
def test_pair_matrix_sums_to_the_score_and_its_margins_to_the_maps(
    n, c, t_a, t_b, similarity, embedding, weighting, seed
):
    generator = torch.Generator().manual_seed(seed)
    a, mask_a = padded(n, c, t_a, generator)
    b, mask_b = padded(n, c, t_b, generator)
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity, weighting, embedding=embedding)
    pair = explain_pair(fam, (a, mask_a), (b, mask_b), pooling_mask=1, token_pairs=True, **RAW)
    pairs = pair.token_pairs
    assert pairs.shape == (n, t_a, t_b) and pairs.dtype == torch.float64
    torch.testing.assert_close(pairs.sum(dim=(1, 2)), pair.scores, **TOLERANCE)
    # Padding pairs with nothing; row and column sums are each side's reference map / count.
    outside = ~(mask_a.bool()[:, :, None] & mask_b.bool()[:, None, :])
    assert bool((pairs[outside] == 0).all())
    e_a, e_b = pooled(a, mask_a), pooled(b, mask_b)
    expected = (e_a * e_b).sum(1)
    if similarity == "cosine":
        expected = expected / (e_a.norm(dim=1) * e_b.norm(dim=1))
    torch.testing.assert_close(pair.scores, expected, **TOLERANCE)
    reference_fam = FeatureActivationMap(model, model.layer, similarity, embedding=embedding)
    map_a = reference_fam.attribute((a, mask_a), reference=(b, mask_b), pooling_mask=1, **RAW)
    map_b = reference_fam.attribute((b, mask_b), reference=(a, mask_a), pooling_mask=1, **RAW)
    torch.testing.assert_close(pairs.sum(2), map_a[:, 0] / mask_a.sum(1, keepdim=True),
                               **TOLERANCE)  # fmt: skip
    torch.testing.assert_close(pairs.sum(1), map_b[:, 0] / mask_b.sum(1, keepdim=True),
                               **TOLERANCE)  # fmt: skip


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("bias", [True, False])
def test_a_linear_head_pairs_its_projected_tokens(similarity, bias):
    generator = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    model = LinearHead(5, 3, bias)
    a, mask_a = padded(2, 5, 6, generator)
    b, mask_b = padded(2, 5, 4, generator)
    fam = FeatureActivationMap(model, model.pool.layer, similarity)
    pair = explain_pair(fam, (a, mask_a), (b, mask_b), pooling_mask=1, token_pairs=True, **RAW)
    weight, beta = model.project.weight.detach(), model.project.bias
    beta = torch.zeros(3, dtype=torch.float64) if beta is None else beta.detach()
    tokens_a = (torch.einsum("dc,nct->ntd", weight, a) + beta) * mask_a[..., None]
    tokens_b = (torch.einsum("dc,nct->ntd", weight, b) + beta) * mask_b[..., None]
    expected = torch.einsum("nid,njd->nij", tokens_a, tokens_b)
    expected = expected / (mask_a.sum(1) * mask_b.sum(1))[:, None, None]
    outputs_a, outputs_b = model(a, mask_a).detach(), model(b, mask_b).detach()
    if similarity == "cosine":
        expected = expected / (outputs_a.norm(dim=1) * outputs_b.norm(dim=1))[:, None, None]
    torch.testing.assert_close(pair.token_pairs, expected, **TOLERANCE)
    torch.testing.assert_close(pair.token_pairs.sum(dim=(1, 2)), pair.scores, **TOLERANCE)
    # Rows: a's raw map plus the bias' share of the score, spread over a's valid tokens.
    g_out = (
        outputs_b
        if similarity == "dot"
        else outputs_b / (outputs_a.norm(dim=1, keepdim=True) * outputs_b.norm(dim=1, keepdim=True))
    )
    constant = (beta * g_out).sum(1, keepdim=True)
    rows = (pair.maps_a[:, 0] + constant) * mask_a / mask_a.sum(1, keepdim=True)
    torch.testing.assert_close(pair.token_pairs.sum(2), rows, **TOLERANCE)


def test_image_positions_pair_in_any_rank():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(2, 4, 3, 5, generator=generator, dtype=torch.float64)
    b = torch.randn(2, 4, 2, 2, generator=generator, dtype=torch.float64)
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer)
    pair = explain_pair(fam, a, b, token_pairs=True)
    assert pair.token_pairs.shape == (2, 3, 5, 2, 2)
    torch.testing.assert_close(pair.token_pairs.sum(dim=(1, 2, 3, 4)), pair.scores, **TOLERANCE)


def test_padding_does_not_change_the_pair_matrix():
    generator = torch.Generator().manual_seed(2)
    a, b = (torch.randn(1, 4, t, generator=generator, dtype=torch.float64) for t in (3, 5))
    ones = torch.ones(1, 3, dtype=torch.long), torch.ones(1, 5, dtype=torch.long)
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer)
    alone = explain_pair(fam, (a, ones[0]), (b, ones[1]), pooling_mask=1, token_pairs=True)
    padding = torch.randn(1, 4, 4, generator=generator, dtype=torch.float64)
    mask = torch.cat([ones[0], torch.zeros(1, 4, dtype=torch.long)], dim=1)
    inside = explain_pair(fam, (torch.cat([a, padding], 2), mask), (b, ones[1]), pooling_mask=1,
                          token_pairs=True)  # fmt: skip
    torch.testing.assert_close(inside.token_pairs[:, :3], alone.token_pairs, **TOLERANCE)
    assert bool((inside.token_pairs[:, 3:] == 0).all())


@pytest.mark.parametrize("model", [FirstToken(), Normalized()], ids=["first-token", "normalize"])
def test_heads_without_a_pair_decomposition_are_refused(model):
    generator = torch.Generator().manual_seed(4)
    a, mask_a = padded(2, 3, 5, generator)
    b, mask_b = padded(2, 3, 5, generator)
    layer = model.layer if isinstance(model, FirstToken) else model.pool.layer
    fam = FeatureActivationMap(model, layer)
    explain_pair(fam, (a, mask_a), (b, mask_b), pooling_mask=1)  # maps are fine
    with pytest.raises(ValueError, match="needs the model's output to be an affine function"):
        explain_pair(fam, (a, mask_a), (b, mask_b), pooling_mask=1, token_pairs=True)


def test_unmasked_padding_is_refused_for_pairs():
    """The model pools over its mask; FAM was not told: the output is not FAM's mean."""
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(2, 3, 5, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer)
    with pytest.raises(ValueError, match="pass pooling_mask"):
        explain_pair(fam, (a, mask), (a.flip(0), mask.flip(0)), token_pairs=True)


@pytest.mark.parametrize("similarity", ["euclidean", lambda q, r: (q * r).sum(1)])
def test_similarities_without_pairs_are_refused(similarity):
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity)
    a = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="token_pairs=True needs a similarity that is bilinear"):
        explain_pair(fam, a, a.flip(0), token_pairs=True)


def test_token_pairs_with_a_foil_are_refused():
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer)
    a = torch.rand(2, 3, 4)
    with pytest.raises(ValueError, match="token_pairs=True decomposes s\\(a, b\\)"):
        explain_pair(fam, a, a.flip(0), foil=a[:1], token_pairs=True)
