"""Token pairs: a mean-pooled dot or cosine score, decomposed exactly over position pairs.

For two sentences with token states ``a_i`` (``n`` valid tokens) and ``b_j`` (``m`` valid tokens)
and mean pooling ``e_a = sum_i a_i / n``, ``e_b = sum_j b_j / m``, bilinearity gives

    e_a . e_b = sum_ij <a_i, b_j> / (n m),
    cos(e_a, e_b) = sum_ij <a_i, b_j> / (n m |e_a| |e_b|),

so ``P_ij = <a_i, b_j> / (n m)`` (divided by ``|e_a| |e_b|`` for cosine) sums to the score. Its
row ``i`` sums to ``<a_i, g>/n`` with ``g`` the reference weights of ``a`` against ``b``: token
``i``'s value in the raw reference-weighted map divided by ``n``; column sums are ``b``'s map
divided by ``m`` in the same way. Positions of any rank pair the same way: ``(N, *S_a, *S_b)``.

When the compared embedding is the model's output ``o = W e + beta`` (an affine head over the
mean), the terms are ``<W a_i + beta, W b_j + beta>``: the head applied to each token, exact
because an affine map commutes with the mean. The head's matrix ``W`` is read from the
pull-back (one backward per ``2N`` of its ``D`` rows; none when the output is the pooled layer
itself), and the head is checked to be affine on the pair's own examples: every example must
satisfy ``o = W e + beta`` with the same ``beta``. A head that fails the check (class-token or
pooler pooling, a normalisation, any non-linear head) has no pair decomposition, and is refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from captum_fam.similarity import CosineSimilarity, DotSimilarity

if TYPE_CHECKING:
    from captum_fam._engine import Engine, Queries

__all__ = ["PAIR_SIMILARITIES", "token_pairs"]

PAIR_SIMILARITIES = (CosineSimilarity, DotSimilarity)
"""The similarities with an exact decomposition over token pairs."""


def token_pairs(engine: Engine, queries_a: Queries, queries_b: Queries) -> Tensor:
    r"""``(N, *S_a, *S_b)`` pair matrix of ``s(a, b)``, masked, summing to the score.

    Args:
        engine (Engine): The engine that computed both sides.
        queries_a (Queries): Side ``a`` (:meth:`Engine.queries`).
        queries_b (Queries): Side ``b``, one example per example of ``a``.

    Returns:
        *Tensor* ``(N, *S_a, *S_b)``: entry ``[k, i, j]`` is the share of pair ``k``'s score
        carried by position ``i`` of ``a`` with position ``j`` of ``b``; 0 where either
        position is masked.
    """
    similarity = engine.similarity
    if not isinstance(similarity, PAIR_SIMILARITIES):
        raise ValueError(
            f"token_pairs=True needs a similarity that is bilinear in the mean-pooled tokens "
            f"('dot', or 'cosine' divided by the two norms); {similarity.name!r} is not. For "
            "'euclidean', -|e_a - e_b|^2 = 2 e_a.e_b - |e_a|^2 - |e_b|^2: only the cross term "
            "2 e_a.e_b splits over pairs of one token of each sentence, the squared norms over "
            "pairs within one sentence; use similarity='dot' or 'cosine' for a pair matrix"
        )
    states_a, states_b = _compared_tokens(queries_a, queries_b)
    n = queries_a.count
    flat_a, flat_b = states_a.flatten(2), states_b.flatten(2)  # (N, D, L)
    pairs = torch.einsum("ndi,ndj->nij", flat_a, flat_b)
    scale = _valid_count(queries_a) * _valid_count(queries_b)
    if isinstance(similarity, CosineSimilarity):
        # The norms of the embeddings the score uses; two steps, as the cosine divides.
        scale = scale * queries_a.embeddings.norm(dim=1) * queries_b.embeddings.norm(dim=1)
    pairs = pairs / scale[:, None, None]
    return pairs.reshape(n, *states_a.shape[2:], *states_b.shape[2:])


def _valid_count(queries: Queries) -> Tensor:
    positions = queries.activations.shape[2:]
    if queries.mask is None:
        count = math.prod(positions)
        return torch.full((queries.count,), float(count), dtype=queries.activations.dtype,
                          device=queries.activations.device)  # fmt: skip
    return queries.mask.flatten(1).sum(dim=1).to(queries.activations.dtype)


def _masked(queries: Queries, states: Tensor) -> Tensor:
    if queries.mask is None:
        return states
    return torch.where(queries.mask.unsqueeze(1), states, torch.zeros((), dtype=states.dtype))


def _compared_tokens(queries_a: Queries, queries_b: Queries) -> tuple[Tensor, Tensor]:
    """Each side's tokens in the compared space: ``(N, D, *S)``, masked positions 0."""
    if queries_a.pull_back is None or (_is_pooled(queries_a) and _is_pooled(queries_b)):
        return _masked(queries_a, queries_a.activations), _masked(queries_b, queries_b.activations)
    matrix = _head_matrix(queries_a, queries_b)
    bias = _common_bias(matrix, queries_a, queries_b)
    sides = []
    for queries in (queries_a, queries_b):
        states = torch.einsum("dc,nc...->nd...", matrix, queries.activations)
        states = states + bias.reshape(1, -1, *([1] * (states.dim() - 2)))
        sides.append(_masked(queries, states))
    return sides[0], sides[1]


def _is_pooled(queries: Queries) -> bool:
    """Whether the model's output is the (masked) mean of the layer itself: no head."""
    embeddings, pooled = queries.embeddings, queries.pooled
    tolerance = _tolerance(pooled.dtype)
    return embeddings.shape == pooled.shape and bool(
        torch.allclose(embeddings, pooled, rtol=tolerance["rtol"], atol=tolerance["atol"])
    )


def _head_matrix(queries_a: Queries, queries_b: Queries) -> Tensor:
    """``W (D, C)`` from the pull-back: example k of a batch carries the row it asks for."""
    d = queries_a.embeddings.shape[1]
    readers = [(queries_a.pull_back, queries_a.count), (queries_b.pull_back, queries_b.count)]
    rows: list[Tensor] = []
    eye = torch.eye(d, dtype=queries_a.embeddings.dtype, device=queries_a.embeddings.device)
    start = 0
    while start < d:
        for pull_back, count in readers:
            assert pull_back is not None  # both sides come through the head
            if start >= d:
                break
            wanted = eye[start : start + count]
            coefficients = torch.zeros(count, d, dtype=eye.dtype, device=eye.device)
            coefficients[: wanted.shape[0]] = wanted
            rows.append(pull_back(coefficients)[: wanted.shape[0]])
            start += wanted.shape[0]
    return torch.cat(rows).to(queries_a.activations.dtype)


def _common_bias(matrix: Tensor, queries_a: Queries, queries_b: Queries) -> Tensor:
    """``beta`` with ``o = W e + beta`` for every example, or a ValueError for other heads."""
    outputs = torch.cat([queries_a.embeddings, queries_b.embeddings]).to(matrix.dtype)
    linear = torch.cat([queries_a.pooled, queries_b.pooled]) @ matrix.T
    biases = outputs - linear
    bias = biases.mean(dim=0)
    scale = outputs.abs().amax() + linear.abs().amax()
    tolerance = _tolerance(matrix.dtype)
    if bool(((biases - bias).abs() > tolerance["atol"] + tolerance["rtol"] * scale).any()):
        raise ValueError(
            "token_pairs=True with embedding='output' needs the model's output to be an affine "
            "function of the layer's (masked) mean over tokens, o = W mean(A) + b (mean pooling, "
            "optionally followed by a linear projection); this model's output is not (class-"
            "token or pooler pooling, a normalisation or another non-linear head, or padding "
            "that the model does not pool: pass pooling_mask). Pair the layer's own mean-pooled "
            "tokens with embedding='layer', or explain a mean-pooling model"
        )
    return bias


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    if dtype == torch.float64:
        return {"atol": 1e-10, "rtol": 1e-8}
    return {"atol": 1e-6, "rtol": 1e-4}
