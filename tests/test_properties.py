"""Invariants that follow from the math of FAM (DESIGN.md P1-P7), as hypothesis properties."""

from __future__ import annotations

import torch
from captum.attr import LayerGradCam
from conftest import ActivationModel, TinyEmbedder
from hypothesis import assume, given
from hypothesis import strategies as st
from torch import nn

from captum_fam import FeatureActivationMap

SIMILARITIES = ("cosine", "dot", "euclidean")
WEIGHTINGS = ("contribution", "reference")


@st.composite
def activation_pairs(draw, signed=True, max_batch=4):
    """Query activations (N, C, H, W), reference activations (M, C, H', W') and a dtype."""
    n = draw(st.integers(1, max_batch))
    m = draw(st.sampled_from(sorted({1, n} | {d for d in range(1, n + 1) if n % d == 0})))
    c = draw(st.integers(1, 12))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    query = torch.randn(n, c, h, w, generator=generator, dtype=dtype)
    reference = torch.randn(m, c, draw(st.integers(1, 5)), 3, generator=generator, dtype=dtype)
    if not signed:
        query, reference = query.abs(), reference.abs()
    return query, reference


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-9}


def pooled(activations: torch.Tensor) -> torch.Tensor:
    return activations.mean(dim=(2, 3))


def paired(reference: torch.Tensor, n: int) -> torch.Tensor:
    return reference.repeat_interleave(n // reference.shape[0], dim=0)


@given(activation_pairs(), st.sampled_from(["cosine", "dot"]))
def test_p1_reference_weighting_is_complete(pair, similarity):
    """P1: the spatial mean of the raw "reference" map equals the similarity score."""
    query, reference = pair
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity=similarity, weighting="reference")
    maps = fam.attribute(
        query, reference=reference, relu_attributions=False, normalize_weights=False
    )
    scores = fam.similarity_scores(query, reference=reference)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    expected = torch.cosine_similarity(e_q, e_r) if similarity == "cosine" else (e_q * e_r).sum(1)
    torch.testing.assert_close(scores, expected, **tolerance(query.dtype))
    torch.testing.assert_close(maps.mean(dim=(1, 2, 3)), scores, **tolerance(query.dtype))


@given(activation_pairs())
def test_p1_euclidean_is_complete_up_to_the_reference_norm(pair):
    query, reference = pair
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity="euclidean", weighting="reference")
    maps = fam.attribute(
        query, reference=reference, relu_attributions=False, normalize_weights=False
    )
    e_r = paired(pooled(reference), query.shape[0])
    scores = fam.similarity_scores(query, reference=reference)
    torch.testing.assert_close(scores, -(pooled(query) - e_r).pow(2).sum(1))
    torch.testing.assert_close(
        maps.mean(dim=(1, 2, 3)), scores + e_r.pow(2).sum(1), **tolerance(query.dtype)
    )


@given(activation_pairs(), st.sampled_from(SIMILARITIES))
def test_contribution_weights_sum_to_the_score(pair, similarity):
    """The paper's reading: weights are the score's terms over channels (Euclidean re-mapped)."""
    query, reference = pair
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity=similarity, weighting="contribution")
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    weights = fam.similarity.weights(e_q, e_r, "contribution")
    offset = e_r.pow(2).sum(1) if similarity == "euclidean" else 0.0
    torch.testing.assert_close(
        weights.sum(1), fam.similarity.score(e_q, e_r) + offset, **tolerance(query.dtype)
    )
    # The map is the activations combined with exactly these weights.
    maps = fam.attribute(
        query, reference=reference, relu_attributions=False, normalize_weights=False
    )
    expected = torch.einsum("nc,nchw->nhw", weights, query).unsqueeze(1)
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
    fam = FeatureActivationMap(model, features.block, similarity="dot", weighting="reference")
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
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity="cosine", weighting=weighting)
    base = fam.attribute(query, reference=reference)
    scaled_reference = fam.attribute(query, reference=reference * reference_scale)
    scaled_query = fam.attribute(query * query_scale, reference=reference)
    tol = tolerance(query.dtype)
    torch.testing.assert_close(scaled_reference, base, **tol)
    # Normalized weights are invariant to the query's scale, so the map grows with A ...
    torch.testing.assert_close(scaled_query, base * query_scale, **tol)
    # ... and the map divided by its peak, as displayed, does not change at all.
    peak = base.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
    peak_scaled = scaled_query.flatten(1).amax(1).clamp_min(1e-12)[:, None, None, None]
    torch.testing.assert_close(scaled_query / peak_scaled, base / peak, **tol)
    if weighting == "reference":
        # The raw reference map decomposes the cosine itself: exactly scale-free.
        raw = {"relu_attributions": False, "normalize_weights": False}
        torch.testing.assert_close(
            fam.attribute(query * query_scale, reference=reference, **raw),
            fam.attribute(query, reference=reference, **raw),
            **tol,
        )


@given(activation_pairs(max_batch=3), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_p4_prototype_map_is_the_mean_of_support_maps(pair, shots, seed):
    """P4 (dot, "reference"): the map against the mean of K supports is the mean of K maps."""
    query, _ = pair
    support = torch.randn(
        shots, query.shape[1], generator=torch.Generator().manual_seed(seed), dtype=query.dtype
    )
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity="dot", weighting="reference")
    kwargs = {"relu_attributions": False, "normalize_weights": False}
    prototype_map = fam.attribute(query, reference_embeddings=support.mean(0), **kwargs)
    per_support = torch.stack(
        [fam.attribute(query, reference_embeddings=s, **kwargs) for s in support]
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
    fam = FeatureActivationMap(model, model.block, similarity=similarity, weighting="reference")
    # Some random initialisations switch the layer off (all-zero embeddings have no cosine).
    assume(bool((fam.embed(a).norm(dim=1) > 0).all() and (fam.embed(b).norm(dim=1) > 0).all()))
    kwargs = {"relu_attributions": False, "normalize_weights": False}
    maps_a = fam.attribute(a, reference=b, **kwargs)
    maps_b = fam.attribute(b, reference=a, **kwargs)
    scores = fam.similarity_scores(a, reference=b)
    torch.testing.assert_close(fam.similarity_scores(b, reference=a), scores)
    torch.testing.assert_close(maps_a.mean(dim=(1, 2, 3)), scores, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maps_b.mean(dim=(1, 2, 3)), scores, atol=1e-5, rtol=1e-4)


@given(
    activation_pairs(),
    st.sampled_from(SIMILARITIES),
    st.sampled_from(WEIGHTINGS),
    st.data(),
)
def test_p6_a_pairs_map_does_not_depend_on_the_batch(pair, similarity, weighting, data):
    """P6: each pair's map is the same alone as inside any batch."""
    query, reference = pair
    n, m = query.shape[0], reference.shape[0]
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity=similarity, weighting=weighting)
    batch_maps = fam.attribute(query, reference=reference)
    i = data.draw(st.integers(0, n - 1))
    alone = fam.attribute(query[i : i + 1], reference=reference[i // (n // m)].unsqueeze(0))
    torch.testing.assert_close(alone[0], batch_maps[i], **tolerance(query.dtype))


@given(activation_pairs(signed=False), st.sampled_from(WEIGHTINGS))
def test_p7_nonnegative_activations_need_no_relu(pair, weighting):
    """P7: non-negative activations + GAP + cosine: weights >= 0, so ReLU changes nothing."""
    query, reference = pair
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity="cosine", weighting=weighting)
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
    model = ActivationModel()
    fam = FeatureActivationMap(model, model.layer, similarity=similarity, weighting=weighting)
    raw = fam.attribute(
        query, reference=reference, relu_attributions=False, normalize_weights=False
    )
    normalized = fam.attribute(query, reference=reference, relu_attributions=False)
    e_q, e_r = pooled(query), paired(pooled(reference), query.shape[0])
    total = fam.similarity.weights(e_q, e_r, weighting).abs().sum(1)
    expected = torch.where(
        total[:, None, None, None] > 0, raw / total[:, None, None, None], torch.zeros_like(raw)
    )
    torch.testing.assert_close(normalized, expected, **tolerance(query.dtype))
    assert torch.isfinite(normalized).all()
