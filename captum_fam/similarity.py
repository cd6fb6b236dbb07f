"""Similarity scores and their decomposition over channels.

Every similarity here is written as

    s(q, r) = sum_k q[k] * g_k(q, r) + c(r)

where ``q`` is the query embedding, ``r`` the reference embedding, ``g`` the *channel
coefficients* (the derivative of ``s`` with respect to ``q[k]`` with the norms held fixed) and
``c`` a term that does not depend on the query. The two weightings of FAM read this one
decomposition in two ways:

- ``weighting="reference"``: ``w_k = g_k``. Because ``q`` is the spatial mean of the layer's
  activations, the spatial mean of ``sum_k w_k A[k]`` is exactly ``s - c``: the map decomposes the
  score over positions (the CAM analogue).
- ``weighting="contribution"``: ``w_k = q[k] * g_k``, the k-th term of the score's sum over
  channels (the paper's "channel-wise contribution"). These weights sum to ``s - c``.

The rule is :func:`channel_weights`, used by the engine for every map. A new similarity is one
small :class:`Similarity` subclass; the attribution class never changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "SIMILARITIES",
    "WEIGHTINGS",
    "CallableSimilarity",
    "CosineSimilarity",
    "DotSimilarity",
    "EuclideanSimilarity",
    "Similarity",
    "channel_weights",
    "resolve_similarity",
]

WEIGHTINGS = ("reference", "contribution")
"""FAM's two readings of the channel coefficients, the default first."""

SimilarityFn = Callable[[Tensor, Tensor], Tensor]


def channel_weights(pooled: Tensor, coefficients: Tensor, weighting: str) -> Tensor:
    r"""FAM's channel weights: the one place where the two weightings differ.

    Args:
        pooled (Tensor): ``(N, C)`` the query's pooled activations at the layer.
        coefficients (Tensor): ``(N, C)`` the score's channel coefficients ``g`` at the layer
                    (for ``embedding="output"``, the output-space coefficients pulled back
                    through the head).
        weighting (str): ``"reference"``: ``w = g``; ``"contribution"``: ``w = pooled * g``,
                    each channel's term of the score.

    Returns:
        *Tensor* ``(N, C)`` of weights.
    """
    if weighting == "reference":
        return coefficients
    if weighting == "contribution":
        return pooled * coefficients
    raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}; got {weighting!r}")


class Similarity(ABC):
    r"""A similarity score between embeddings and its exact per-channel decomposition.

    Subclass it to explain a model that compares embeddings in its own way. Implement
    :meth:`score` and :meth:`coefficients` such that
    ``score(q, r) == (q * coefficients(q, r)).sum(1) + c(r)`` for some ``c`` that does not
    depend on ``q``; override :meth:`validate` to reject embeddings the score is undefined for.

    Examples::

        >>> class Bilinear(Similarity):
        ...     name = "bilinear"
        ...     def __init__(self, metric: torch.Tensor) -> None:
        ...         self.metric = metric                    # (C, C), learned
        ...     def score(self, query, reference):
        ...         return ((query @ self.metric) * reference).sum(1)
        ...     def coefficients(self, query, reference):
        ...         return reference @ self.metric.T        # exact: s = q . (M r)
        >>> fam = FeatureActivationMap(model, model.layer4, similarity=Bilinear(metric))
    """

    name: str = "custom"

    @abstractmethod
    def score(self, query: Tensor, reference: Tensor) -> Tensor:
        """Similarity of each row pair: ``(N, C), (N, C) -> (N,)``."""

    @abstractmethod
    def coefficients(self, query: Tensor, reference: Tensor) -> Tensor:
        """Channel coefficients ``g`` of the decomposition: ``(N, C), (N, C) -> (N, C)``."""

    def validate(self, query: Tensor, reference: Tensor) -> None:  # noqa: B027 (optional hook)
        """Raise ``ValueError`` for embeddings the score is not defined for."""

    def weights(self, query: Tensor, reference: Tensor, weighting: str) -> Tensor:
        """Channel weights ``(N, C)`` of FAM under ``weighting``: :func:`channel_weights`."""
        return channel_weights(query, self.coefficients(query, reference), weighting)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class CosineSimilarity(Similarity):
    r"""Cosine similarity ``q . r / (|q| |r|)``; ``g = r / (|q| |r|)``, ``c = 0``.

    Scale-invariant in both embeddings, so the normalized maps are too. Embeddings with zero norm
    have no cosine and are rejected.
    """

    name = "cosine"

    def score(self, query: Tensor, reference: Tensor) -> Tensor:
        return (query * self.coefficients(query, reference)).sum(1)

    def coefficients(self, query: Tensor, reference: Tensor) -> Tensor:
        # Divide in two steps: the product of two small norms can underflow to zero.
        unit_reference = reference / reference.norm(dim=1, keepdim=True)
        return unit_reference / query.norm(dim=1, keepdim=True)

    def validate(self, query: Tensor, reference: Tensor) -> None:
        for role, embeddings in (("query", query), ("reference", reference)):
            zero = (embeddings.norm(dim=1) == 0).nonzero().flatten()
            if zero.numel():
                raise ValueError(
                    f"cosine similarity is undefined for a zero {role} embedding (rows "
                    f"{zero.tolist()[:10]} pool to all zeros at the layer). Pick a layer that is "
                    "active for these images, or use similarity='dot'."
                )


class DotSimilarity(Similarity):
    r"""Dot product ``q . r``; ``g = r``, ``c = 0``.

    With the classifier row of class ``c`` as the reference, FAM with ``weighting="reference"``
    is CAM for class ``c`` (and ``H * W`` times Grad-CAM of a GAP + linear model).
    """

    name = "dot"

    def score(self, query: Tensor, reference: Tensor) -> Tensor:
        return (query * reference).sum(1)

    def coefficients(self, query: Tensor, reference: Tensor) -> Tensor:
        return reference


class EuclideanSimilarity(Similarity):
    r"""Negative squared Euclidean distance ``-|q - r|^2``; ``g = 2 r - q``, ``c = -|r|^2``.

    Indeed ``-|q - r|^2 = sum_k q[k] (2 r[k] - q[k]) - |r|^2``. The "reference" weights
    ``2 r - q`` decompose the score up to ``-|r|^2``, a constant for a given reference. The
    per-channel terms of the distance itself, ``-(q[k] - r[k])^2``, are all <= 0 and would only
    say where the query differs; the "contribution" weights are re-mapped to
    ``q[k] (2 r[k] - q[k])``, the terms of ``s + |r|^2``: positive where a channel is active in
    the query and in the reference (``0 < q[k] < 2 r[k]``), negative where the query has more of a
    channel than twice the reference. They sum to ``s + |r|^2``.
    """

    name = "euclidean"

    def score(self, query: Tensor, reference: Tensor) -> Tensor:
        return -(query - reference).pow(2).sum(1)

    def coefficients(self, query: Tensor, reference: Tensor) -> Tensor:
        return 2 * reference - query


class CallableSimilarity(Similarity):
    r"""A plain scoring function ``f(query, reference) -> (N,)`` used as a similarity.

    The channel coefficients are the gradient of ``f`` with respect to the query embedding,
    taken by autograd on the ``(N, C)`` embeddings alone (never through the network):
    ``g = df/dq``. This is exact for bilinear scores (dot products, ``q^T W r``) and a
    first-order local rule otherwise. For scores that are invariant to the scale of ``q``
    (cosine and its variants) the gradient is orthogonal to ``q``, so the "contribution" weights
    sum to zero; give such scores as a :class:`Similarity` subclass with their exact
    coefficients, or use a built-in name.

    Args:
        fn (Callable): ``fn(query, reference)`` with two ``(N, C)`` tensors, returning ``(N,)``
                    scores, differentiable in ``query``.
    """

    def __init__(self, fn: SimilarityFn) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)

    def score(self, query: Tensor, reference: Tensor) -> Tensor:
        scores = self.fn(query, reference)
        if not isinstance(scores, Tensor) or scores.shape != query.shape[:1]:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(
                f"similarity callable {self.name!r} must return one score per pair, a tensor "
                f"of shape ({query.shape[0]},); it returned {shape}"
            )
        return scores

    def coefficients(self, query: Tensor, reference: Tensor) -> Tensor:
        # Callers may sit under no_grad or inference_mode: differentiate fresh leaf copies.
        with torch.inference_mode(False), torch.enable_grad():
            query_leaf = query.detach().clone().requires_grad_(True)
            reference_copy = reference.detach().clone()
            scores = self.score(query_leaf, reference_copy)
            if not scores.requires_grad:
                raise ValueError(
                    f"similarity callable {self.name!r} is not differentiable in its first "
                    "argument; FAM takes its channel coefficients from that gradient. Write a "
                    "Similarity subclass with explicit coefficients instead."
                )
            (gradient,) = torch.autograd.grad(scores.sum(), query_leaf)
        return gradient

    def __repr__(self) -> str:
        return f"CallableSimilarity({self.name})"


_BUILT_IN: dict[str, type[Similarity]] = {
    "cosine": CosineSimilarity,
    "dot": DotSimilarity,
    "euclidean": EuclideanSimilarity,
}

SIMILARITIES = tuple(_BUILT_IN)
"""The names of the built-in similarities, accepted as ``similarity=``."""


def resolve_similarity(similarity: str | Similarity | SimilarityFn) -> Similarity:
    """Turn a name, a :class:`Similarity` or a scoring callable into a :class:`Similarity`."""
    if isinstance(similarity, Similarity):
        return similarity
    if isinstance(similarity, str):
        try:
            return _BUILT_IN[similarity]()
        except KeyError:
            raise ValueError(
                f"similarity must be one of {sorted(_BUILT_IN)}, a Similarity or a callable "
                f"f(query, reference) -> (N,); got {similarity!r}"
            ) from None
    if callable(similarity):
        return CallableSimilarity(similarity)
    raise TypeError(
        "similarity must be a name ('cosine', 'dot', 'euclidean'), a Similarity or a callable "
        f"f(query, reference) -> (N,); got {type(similarity).__name__}"
    )
