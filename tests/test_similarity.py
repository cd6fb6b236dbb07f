"""Similarities, their channel decompositions and the one weighting rule."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_fam.similarity import (
    SIMILARITIES,
    WEIGHTINGS,
    CallableSimilarity,
    CosineSimilarity,
    DotSimilarity,
    EuclideanSimilarity,
    channel_weights,
    resolve_similarity,
)


@st.composite
def embedding_pairs(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 8))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    return (torch.randn(n, c, generator=generator, dtype=torch.float64),
            torch.randn(n, c, generator=generator, dtype=torch.float64))  # fmt: skip


@given(embedding_pairs(), st.sampled_from(SIMILARITIES))
def test_every_score_decomposes_over_channels(pair, name):
    """s(q, r) = q . g(q, r) + c(r), with c independent of the query."""
    query, reference = pair
    similarity = resolve_similarity(name)
    g = similarity.coefficients(query, reference)
    constant = -reference.pow(2).sum(1) if name == "euclidean" else 0.0
    torch.testing.assert_close(similarity.score(query, reference), (query * g).sum(1) + constant)


@given(embedding_pairs(), st.sampled_from(SIMILARITIES))
def test_the_weighting_rule(pair, name):
    query, reference = pair
    similarity = resolve_similarity(name)
    g = similarity.coefficients(query, reference)
    assert torch.equal(channel_weights(query, g, "reference"), g)
    torch.testing.assert_close(channel_weights(query, g, "contribution"), query * g)
    for weighting in WEIGHTINGS:  # the method on the class is the same rule
        torch.testing.assert_close(
            similarity.weights(query, reference, weighting), channel_weights(query, g, weighting)
        )
    with pytest.raises(ValueError, match="weighting must be one of"):
        channel_weights(query, g, "gradient")


def test_built_ins_by_name():
    assert SIMILARITIES == ("cosine", "dot", "euclidean")
    assert isinstance(resolve_similarity("cosine"), CosineSimilarity)
    assert isinstance(resolve_similarity("dot"), DotSimilarity)
    assert isinstance(resolve_similarity("euclidean"), EuclideanSimilarity)
    assert WEIGHTINGS[0] == "reference"  # the default first


def test_callable_coefficients_are_the_query_gradient():
    metric = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    similarity = resolve_similarity(lambda q, r: ((q @ metric) * r).sum(1))
    assert isinstance(similarity, CallableSimilarity)
    query, reference = torch.randn(2, 3), torch.randn(2, 3)
    with torch.inference_mode():
        g = similarity.coefficients(query, reference)
    torch.testing.assert_close(g, reference @ metric.T)


def test_cosine_rejects_zero_embeddings():
    with pytest.raises(ValueError, match=r"zero query embedding \(rows \[1\]"):
        CosineSimilarity().validate(torch.tensor([[1.0], [0.0]]), torch.ones(2, 1))
