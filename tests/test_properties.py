"""Invariants that follow from the math of FAM (docs/method.md, P1-P7), as hypothesis properties.

Activations are drawn with one, two or three positional dimensions (sequences, images,
volumes), and both ``embedding`` choices run: the test model's output is the mean over
positions, so the two explain the same score and must agree.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam
from helpers import ActivationModel, TinyEmbedder
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.similarity import SIMILARITIES, WEIGHTINGS, channel_weights

EMBEDDINGS = ("output", "layer")

# Drawn positions may collapse to one; the library says so, and these tests know.
pytestmark = pytest.mark.filterwarnings("ignore:the layer's output has a single position")
RAW = {"relu_attributions": False, "normalize_weights": False}


@st.composite
def activation_pairs(draw, signed=True, max_batch=4):
    """Query activations (N, C, *S), reference activations (M, C, *S') with 1 to 3 dims."""
    n = draw(st.integers(1, max_batch))
    m = draw(st.sampled_from(sorted({1, n} | {d for d in range(1, n + 1) if n % d == 0})))
    c = draw(st.integers(1, 12))
    rank = draw(st.integers(1, 3))
    size = st.integers(1, 6 if rank < 3 else 3)
    query_positions = tuple(draw(size) for _ in range(rank))
    reference_positions = tuple(draw(size) for _ in range(rank))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    query = torch.randn(n, c, *query_positions, generator=generator, dtype=dtype)
    reference = torch.randn(m, c, *reference_positions, generator=generator, dtype=dtype)
    if not signed:
        query, reference = query.abs(), reference.abs()
    return query, reference


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-9}


def pooled(activations: torch.Tensor) -> torch.Tensor:
    return activations.mean(dim=tuple(range(2, activations.dim())))


def paired(reference: torch.Tensor, n: int) -> torch.Tensor:
    return reference.repeat_interleave(n // reference.shape[0], dim=0)


def spatial_mean(maps: torch.Tensor) -> torch.Tensor:
    return maps.flatten(1).mean(1)


def make_fam(similarity="cosine", weighting="reference", embedding="output"):
    model = ActivationModel()
    return FeatureActivationMap(model, model.layer, similarity, weighting, embedding=embedding)


@given(activation_pairs(), st.sampled_from(["cosine", "dot"]), st.sampled_from(EMBEDDINGS))
def test_p1_reference_weighting_is_complete(pair, similarity, embedding):
    """P1: the mean over positions of the raw "reference" map equals the similarity score."""
    query, reference = pair
    fam = make_fam(similarity, embedding=embedding)
    maps = fam.attribute(query, reference=reference, **RAW)
    assert maps.shape == (query.shape[0], 1, *query.shape[2:])
    scores = fam.similarity_scores(query, reference=reference)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    expected = torch.cosine_similarity(e_q, e_r) if similarity == "cosine" else (e_q * e_r).sum(1)
    torch.testing.assert_close(scores, expected, **tolerance(query.dtype))
    torch.testing.assert_close(spatial_mean(maps), scores, **tolerance(query.dtype))


@given(activation_pairs(), st.sampled_from(EMBEDDINGS))
def test_p1_euclidean_is_complete_up_to_the_reference_norm(pair, embedding):
    query, reference = pair
    fam = make_fam("euclidean", embedding=embedding)
    maps = fam.attribute(query, reference=reference, **RAW)
    e_r = paired(pooled(reference), query.shape[0])
    scores = fam.similarity_scores(query, reference=reference)
    torch.testing.assert_close(scores, -(pooled(query) - e_r).pow(2).sum(1))
    torch.testing.assert_close(
        spatial_mean(maps), scores + e_r.pow(2).sum(1), **tolerance(query.dtype)
    )


@given(
    st.integers(1, 4),
    st.integers(1, 8),
    st.integers(2, 9),
    st.sampled_from(["cosine", "dot"]),
    st.sampled_from(EMBEDDINGS),
    st.integers(0, 2**31 - 1),
)
def test_p1_on_masked_sequences(n, c, t, similarity, embedding, seed):
    """P1 on padded sequences: the masked mean of the raw map is the score; padding maps to 0."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(n, c, t, generator=generator, dtype=torch.float64)
    reference = torch.randn(1, c, t, generator=generator, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (n,), generator=generator)
    mask = torch.arange(t)[None] < lengths[:, None]
    fam = make_fam(similarity, embedding=embedding)
    maps = fam.attribute(
        (query, mask.long()),
        reference=(reference, torch.ones(1, t, dtype=torch.long)),
        pooling_mask=1,
        **RAW,
    )
    assert bool((maps[:, 0][~mask] == 0).all())
    scores = fam.similarity_scores(
        (query, mask.long()), reference=(reference, torch.ones(1, t, dtype=torch.long)),
        pooling_mask=1,
    )  # fmt: skip
    masked_mean = (maps[:, 0] * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(masked_mean, scores, **tolerance(query.dtype))


@given(st.integers(1, 8), st.integers(1, 6), st.integers(0, 4), st.sampled_from(EMBEDDINGS),
       st.integers(0, 2**31 - 1))  # fmt: skip
def test_padding_does_not_change_a_sentence_map(c, t, extra, embedding, seed):
    """A sentence's map is the same alone and padded into a longer batch (values and zeros)."""
    generator = torch.Generator().manual_seed(seed)
    sentence = torch.randn(1, c, t, generator=generator)
    reference = torch.randn(c, generator=generator)
    fam = make_fam("cosine", embedding=embedding)
    alone = fam.attribute(
        (sentence, torch.ones(1, t)), reference_embeddings=reference, pooling_mask=1
    )
    garbage = torch.randn(1, c, extra, generator=generator) * 100
    padded = torch.cat([sentence, garbage], dim=2)
    mask = torch.cat([torch.ones(1, t), torch.zeros(1, extra)], dim=1)
    inside = fam.attribute((padded, mask), reference_embeddings=reference, pooling_mask=1)
    torch.testing.assert_close(inside[..., :t], alone)
    assert bool((inside[..., t:] == 0).all())


@given(activation_pairs(), st.sampled_from(SIMILARITIES), st.sampled_from(EMBEDDINGS))
def test_contribution_weights_sum_to_the_score(pair, similarity, embedding):
    """The paper's reading: weights are the score's terms over channels (Euclidean re-mapped)."""
    query, reference = pair
    fam = make_fam(similarity, "contribution", embedding)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    weights = channel_weights(e_q, fam.similarity.coefficients(e_q, e_r), "contribution")
    offset = e_r.pow(2).sum(1) if similarity == "euclidean" else 0.0
    torch.testing.assert_close(
        weights.sum(1), fam.similarity.score(e_q, e_r) + offset, **tolerance(query.dtype)
    )
    # The map is the activations combined with exactly these weights.
    maps = fam.attribute(query, reference=reference, **RAW)
    expected = torch.einsum("nc,nc...->n...", weights, query).unsqueeze(1)
    torch.testing.assert_close(maps, expected, **tolerance(query.dtype))


@given(
    n=st.integers(1, 3),
    classes=st.integers(2, 5),
    size=st.integers(3, 8),
    seed=st.integers(0, 2**31 - 1),
    relu=st.booleans(),
)
def test_p2_reduces_to_cam_and_grad_cam(n, classes, size, seed, relu):
    """P2: GAP + linear classifier, dot similarity with the class row: CAM = H*W * Grad-CAM."""
    torch.manual_seed(seed)
    features = TinyEmbedder(channels=5).eval()
    classifier = nn.Linear(5, classes)
    model = nn.Sequential(features, classifier).eval()
    images = torch.rand(n, 3, size, size)
    target = torch.randint(classes, (n,))
    # The class row lives in the pooled layer's space: the layer's own similarity.
    fam = FeatureActivationMap(model, features.block, similarity="dot", embedding="layer")
    maps = fam.attribute(
        images,
        reference_embeddings=classifier.weight[target].detach(),
        relu_attributions=relu,
        normalize_weights=False,
    )
    activations = features.block(features.stem(images))
    cam = torch.einsum("nc,nchw->nhw", classifier.weight[target], activations).unsqueeze(1)
    torch.testing.assert_close(maps, cam.relu() if relu else cam, atol=1e-5, rtol=1e-4)
    grad_cam = LayerGradCam(model, features.block).attribute(
        images, target=target, relu_attributions=relu
    )
    h, w = activations.shape[-2:]
    torch.testing.assert_close(maps, grad_cam * (h * w), atol=1e-5, rtol=1e-4)


@given(
    activation_pairs(),
    st.sampled_from(WEIGHTINGS),
    st.floats(0.01, 100.0),
    st.floats(0.01, 100.0),
)
def test_p3_cosine_maps_are_scale_invariant(pair, weighting, query_scale, reference_scale):
    """P3: scaling the reference leaves the map as it is; scaling the query only rescales it."""
    query, reference = pair
    fam = make_fam("cosine", weighting)
    base = fam.attribute(query, reference=reference)
    scaled_reference = fam.attribute(query, reference=reference * reference_scale)
    scaled_query = fam.attribute(query * query_scale, reference=reference)
    tol = tolerance(query.dtype)
    torch.testing.assert_close(scaled_reference, base, **tol)
    # Normalized weights are invariant to the query's scale, so the map grows with A ...
    torch.testing.assert_close(scaled_query, base * query_scale, **tol)
    # ... and the map divided by its peak, as displayed, does not change at all.
    peak = base.flatten(1).amax(1).clamp_min(1e-12)
    peak_scaled = scaled_query.flatten(1).amax(1).clamp_min(1e-12)
    shape = (-1,) + (1,) * (base.dim() - 1)
    torch.testing.assert_close(
        scaled_query / peak_scaled.view(shape), base / peak.view(shape), **tol
    )
    if weighting == "reference":
        # The raw reference map decomposes the cosine itself: exactly scale-free.
        torch.testing.assert_close(
            fam.attribute(query * query_scale, reference=reference, **RAW),
            fam.attribute(query, reference=reference, **RAW),
            **tol,
        )


@given(activation_pairs(max_batch=3), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_p4_prototype_map_is_the_mean_of_support_maps(pair, shots, seed):
    """P4 (dot, "reference"): the map against the mean of K supports is the mean of K maps."""
    query, _ = pair
    support = torch.randn(
        shots, query.shape[1], generator=torch.Generator().manual_seed(seed), dtype=query.dtype
    )
    fam = make_fam("dot")
    prototype_map = fam.attribute(query, reference_embeddings=support.mean(0), **RAW)
    per_support = torch.stack(
        [fam.attribute(query, reference_embeddings=s, **RAW) for s in support]
    )
    torch.testing.assert_close(prototype_map, per_support.mean(0), **tolerance(query.dtype))


@given(st.integers(1, 3), st.sampled_from(["cosine", "dot"]), st.integers(0, 2**31 - 1))
def test_p5_both_sides_of_a_pair_are_complete(n, similarity, seed):
    """P5: with roles swapped, the reference image's map also decomposes the same score."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = TinyEmbedder().eval()
    a = torch.rand(n, 3, 10, 10, generator=generator)
    b = torch.rand(n, 3, 8, 12, generator=generator)
    fam = FeatureActivationMap(model, model.block, similarity=similarity)
    # Some random initialisations switch the layer off (all-zero embeddings have no cosine).
    assume(bool((fam.embed(a).norm(dim=1) > 0).all() and (fam.embed(b).norm(dim=1) > 0).all()))
    maps_a = fam.attribute(a, reference=b, **RAW)
    maps_b = fam.attribute(b, reference=a, **RAW)
    scores = fam.similarity_scores(a, reference=b)
    torch.testing.assert_close(fam.similarity_scores(b, reference=a), scores)
    torch.testing.assert_close(spatial_mean(maps_a), scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(spatial_mean(maps_b), scores, atol=1e-5, rtol=1e-4)


@given(
    activation_pairs(),
    st.sampled_from(SIMILARITIES),
    st.sampled_from(WEIGHTINGS),
    st.sampled_from(EMBEDDINGS),
    st.data(),
)
def test_p6_a_pairs_map_does_not_depend_on_the_batch(pair, similarity, weighting, embedding, data):
    """P6: each pair's map is the same alone as inside any batch."""
    query, reference = pair
    n, m = query.shape[0], reference.shape[0]
    fam = make_fam(similarity, weighting, embedding)
    batch_maps = fam.attribute(query, reference=reference)
    i = data.draw(st.integers(0, n - 1))
    alone = fam.attribute(query[i : i + 1], reference=reference[i // (n // m)].unsqueeze(0))
    torch.testing.assert_close(alone[0], batch_maps[i], **tolerance(query.dtype))


@given(activation_pairs(signed=False), st.sampled_from(WEIGHTINGS))
def test_p7_nonnegative_activations_need_no_relu(pair, weighting):
    """P7: non-negative activations + GAP + cosine: weights >= 0, so ReLU changes nothing."""
    query, reference = pair
    fam = make_fam("cosine", weighting)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    assert bool((fam.similarity.weights(e_q, e_r, weighting) >= 0).all())
    torch.testing.assert_close(
        fam.attribute(query, reference=reference, relu_attributions=True),
        fam.attribute(query, reference=reference, relu_attributions=False),
    )


@given(activation_pairs(), st.sampled_from(SIMILARITIES), st.sampled_from(WEIGHTINGS))
def test_normalized_weights_have_unit_absolute_sum(pair, similarity, weighting):
    """normalize_weights divides by sum |w|: the map is that of w / sum |w|, a positive rescale."""
    query, reference = pair
    fam = make_fam(similarity, weighting)
    raw = fam.attribute(query, reference=reference, **RAW)
    normalized = fam.attribute(query, reference=reference, relu_attributions=False)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    total = fam.similarity.weights(e_q, e_r, weighting).abs().sum(1)
    shape = (-1,) + (1,) * (raw.dim() - 1)
    expected = torch.where(total.view(shape) > 0, raw / total.view(shape), torch.zeros_like(raw))
    torch.testing.assert_close(normalized, expected, **tolerance(query.dtype))
    assert torch.isfinite(normalized).all()


@given(activation_pairs(), st.integers(1, 5), st.sampled_from(EMBEDDINGS), st.integers(0, 99))
def test_background_contrast_explains_the_score_minus_the_mean_background_score(
    pair, k, embedding, seed
):
    """The raw map against a background set decomposes s(q, r) - mean_k s(q, b_k) (dot)."""
    query, reference = pair
    background = torch.randn(k, query.shape[1], generator=torch.Generator().manual_seed(seed),
                             dtype=query.dtype)  # fmt: skip
    fam = make_fam("dot", embedding=embedding)
    maps = fam.attribute(query, reference=reference, background_embeddings=background, **RAW)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    expected = (e_q * e_r).sum(1) - (e_q @ background.T).mean(1)
    torch.testing.assert_close(spatial_mean(maps), expected, **tolerance(query.dtype))
