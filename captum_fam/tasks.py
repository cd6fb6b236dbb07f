"""Task helpers: FAM for pairs, few-shot prototypes and retrieval, batched.

Each helper runs the network once per image set (queries, support, gallery) and then computes
any number of maps with cheap tensor work, because a FAM map only needs the query's
activations and the reference's embedding. Each map equals the corresponding
``fam.attribute`` call (the tests check it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam._checks import TensorOrTuple, format_batch, format_embeddings, one_of
from captum_fam.attribution import FeatureActivationMap

__all__ = [
    "PairExplanation",
    "PrototypeExplanation",
    "RetrievalExplanation",
    "explain_pair",
    "explain_prototypes",
    "explain_retrieval",
]


@dataclass
class PairExplanation:
    """Both sides of N pairs: ``maps_a`` (a against b), ``maps_b`` (b against a), ``scores``."""

    maps_a: Tensor  # (N, 1, H, W)
    maps_b: Tensor  # (N, 1, H', W')
    scores: Tensor  # (N,)


@dataclass
class PrototypeExplanation:
    """Each query against every class prototype of an N-way K-shot episode."""

    classes: Tensor  # (W,) the support labels, sorted
    scores: Tensor  # (N, W) similarity to each prototype
    prediction: Tensor  # (N,) the class of the most similar prototype
    maps: Tensor  # (N, W, H, W') one map per way
    prototypes: Tensor  # (W, D) mean support embeddings


@dataclass
class RetrievalExplanation:
    """Each query against its top-k gallery items."""

    indices: Tensor  # (N, k) gallery rows, most similar first
    scores: Tensor  # (N, k)
    maps: Tensor  # (N, k, H, W) the query against each retrieved item
    gallery_maps: Tensor | None  # (N, k, H', W') each item against the query (gallery images)


@torch.no_grad()
def explain_pair(
    fam: FeatureActivationMap,
    a: TensorOrTuple,
    b: TensorOrTuple,
    foil: TensorOrTuple | None = None,
    foil_embeddings: Tensor | None = None,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
) -> PairExplanation:
    r"""Explain N pairs from both sides: what in ``a`` matches ``b``, and the reverse.

    Two forwards in all (one per side). With a foil, each side's map is contrastive: why ``a``
    matches ``b`` rather than the foil, and why ``b`` matches ``a`` rather than the foil.

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        a (Tensor or tuple[Tensor, ...]): N images.
        b (Tensor or tuple[Tensor, ...]): N images, pair i is ``(a[i], b[i])``.
        foil (Tensor or tuple[Tensor, ...], optional): Foil images (1 or N). Default: None
        foil_embeddings (Tensor, optional): Or foil embeddings (1 or N rows). Default: None
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.

    Returns:
        :class:`PairExplanation` with ``maps_a``, ``maps_b`` ``(N, 1, H, W)`` and ``scores``
        ``(N,)``.

    Examples::

        >>> result = explain_pair(fam, faces_a, faces_b)
        >>> result.scores, result.maps_a.shape
    """
    side_a, side_b = format_batch(a, "a"), format_batch(b, "b")
    n = side_a[0].shape[0]
    if side_b[0].shape[0] != n:
        raise ValueError(f"a and b must hold the same number of images; got {n} and "
                         f"{side_b[0].shape[0]}")  # fmt: skip
    if foil is not None and foil_embeddings is not None:
        raise ValueError("give at most one of foil or foil_embeddings; got both")
    queries_a = fam._queries(side_a, None, False)
    queries_b = fam._queries(side_b, None, False)
    foil_rows = None
    if foil is not None or foil_embeddings is not None:
        foil_plan = fam._plan_references(n, side_a, foil, foil_embeddings, "foil")
        foil_rows = fam._reference_rows(foil_plan, queries_a, None, False)
    embeddings_a, embeddings_b = queries_a.embeddings, queries_b.embeddings
    fam.similarity.validate(embeddings_a, embeddings_b)
    kwargs: dict[str, Any] = {
        "relu_attributions": relu_attributions,
        "normalize_weights": normalize_weights,
    }
    maps_a = fam._maps(queries_a, embeddings_b, foil_rows, **kwargs)
    maps_b = fam._maps(queries_b, embeddings_a, foil_rows, **kwargs)
    device = side_a[0].device
    return PairExplanation(
        maps_a.to(device), maps_b.to(device), fam.similarity.score(embeddings_a, embeddings_b)
    )


@torch.no_grad()
def explain_prototypes(
    fam: FeatureActivationMap,
    queries: TensorOrTuple,
    support: TensorOrTuple,
    support_labels: Tensor,
    contrastive: bool = False,
    temperature: float = 1.0,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
) -> PrototypeExplanation:
    r"""Explain an N-way K-shot episode: each query against every class prototype.

    A prototype is the mean support embedding of a class (as in prototypical networks). One
    forward for the support set and one for the queries; the W maps per query are tensor work.

    With ``contrastive=True`` each map explains the N-way decision itself: the way's channel
    weights minus the softmax-weighted mixture of all ways' weights, with probabilities
    ``softmax(scores / temperature)``. That is the gradient of the way's log-probability with
    respect to the query embedding, norms held fixed, in closed form: evidence shared by all
    classes cancels, and what sets this class apart remains.

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        queries (Tensor or tuple[Tensor, ...]): N query images.
        support (Tensor or tuple[Tensor, ...]): The support images of the episode.
        support_labels (Tensor): Their integer labels, one per support image.
        contrastive (bool, optional): Explain the decision among the ways. Default: False
        temperature (float, optional): The classifier's logits are ``scores / temperature``
                    (only used when ``contrastive``). Default: 1.0
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.

    Returns:
        :class:`PrototypeExplanation` with ``classes (W,)``, ``scores (N, W)``,
        ``prediction (N,)``, ``maps (N, W, H, W')`` and ``prototypes (W, D)``.

    Examples::

        >>> episode = explain_prototypes(fam, queries, support, support_labels)
        >>> episode.prediction, episode.maps[:, 0]     # maps against the first class
    """
    batch = format_batch(queries, "queries")
    support_batch = format_batch(support, "support")
    if not isinstance(support_labels, Tensor) or support_labels.shape != (
        support_batch[0].shape[0],
    ):
        raise ValueError(
            f"support_labels must be a tensor of {support_batch[0].shape[0]} labels, one per "
            "support image"
        )
    if support_labels.is_floating_point():
        raise TypeError(f"support_labels must be integer class labels; got {support_labels.dtype}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    state = fam._queries(batch, None, False)
    support_embeddings = fam._embed(support_batch, None, False)
    classes, ways = torch.unique(support_labels.to(support_embeddings.device), return_inverse=True)
    counts = torch.bincount(ways, minlength=len(classes)).to(support_embeddings.dtype)
    prototypes = torch.zeros(
        len(classes), support_embeddings.shape[1], dtype=support_embeddings.dtype,
        device=support_embeddings.device,
    ).index_add_(0, ways, support_embeddings) / counts[:, None]  # fmt: skip
    prototypes = prototypes.to(state.embeddings.device)

    n = batch[0].shape[0]
    rows = [prototypes[w].expand(n, -1) for w in range(len(classes))]
    for way_rows in rows:
        fam.similarity.validate(state.embeddings, way_rows)
    scores = torch.stack([fam.similarity.score(state.embeddings, r) for r in rows], dim=1)
    coefficients = torch.stack([state.coefficients(fam.similarity, r) for r in rows], dim=1)
    if contrastive:
        probabilities = torch.softmax(scores / temperature, dim=1)
        mixture = (probabilities[:, :, None] * coefficients).sum(dim=1, keepdim=True)
        coefficients = coefficients - mixture
    maps = torch.cat(
        [
            fam._maps_from_coefficients(
                state, coefficients[:, w], relu_attributions, normalize_weights
            )
            for w in range(len(classes))
        ],
        dim=1,
    )
    device = batch[0].device
    return PrototypeExplanation(
        classes=classes.to(device),
        scores=scores.to(device),
        prediction=classes[scores.argmax(dim=1).to(classes.device)].to(device),
        maps=maps.to(device),
        prototypes=prototypes.to(device),
    )


@torch.no_grad()
def explain_retrieval(
    fam: FeatureActivationMap,
    queries: TensorOrTuple,
    gallery: TensorOrTuple | None = None,
    gallery_embeddings: Tensor | None = None,
    k: int = 5,
    batch_size: int = 64,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
) -> RetrievalExplanation:
    r"""Retrieve each query's top-k gallery items and explain every match.

    Gallery embeddings are computed once, ``batch_size`` images at a time (only the
    embeddings are kept), or taken precomputed (:meth:`FeatureActivationMap.embed`). Scoring
    runs in gallery chunks of ``batch_size`` too, so memory stays bounded for large galleries.
    With cached embeddings the cost is one query forward plus tensor work for the k maps.
    With gallery images, the retrieved items are also explained against the query
    (``gallery_maps``, one more forward for the N * k retrieved images).

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        queries (Tensor or tuple[Tensor, ...]): N query images.
        gallery (Tensor or tuple[Tensor, ...], optional): G gallery images.
        gallery_embeddings (Tensor, optional): Or their ``(G, D)`` embeddings. Exactly one of
                    the two is given.
        k (int, optional): Items retrieved per query. Default: 5
        batch_size (int, optional): Gallery images per forward and gallery rows per scoring
                    chunk. Default: 64
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.

    Returns:
        :class:`RetrievalExplanation` with ``indices`` and ``scores`` ``(N, k)``, ``maps``
        ``(N, k, H, W)`` and ``gallery_maps`` ``(N, k, H', W')`` (None for embeddings).

    Examples::

        >>> gallery_embeddings = torch.cat([fam.embed(chunk) for chunk in gallery.split(256)])
        >>> hits = explain_retrieval(fam, query, gallery_embeddings=gallery_embeddings, k=10)
        >>> hits.indices[0], hits.scores[0]
    """
    one_of(gallery, gallery_embeddings, ("gallery", "gallery_embeddings"))
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    batch = format_batch(queries, "queries")
    gallery_batch = None if gallery is None else format_batch(gallery, "gallery")
    if gallery_batch is not None:
        gallery_embeddings = torch.cat(
            [
                fam._embed(tuple(t[i : i + batch_size] for t in gallery_batch), None, False)
                for i in range(0, gallery_batch[0].shape[0], batch_size)
            ]
        )
    embeddings = format_embeddings(gallery_embeddings, "gallery_embeddings")
    size = embeddings.shape[0]
    if not 1 <= k <= size:
        raise ValueError(f"k must be between 1 and the gallery size {size}; got {k}")

    state = fam._queries(batch, None, False)
    embeddings = embeddings.to(device=state.embeddings.device, dtype=state.embeddings.dtype)
    if embeddings.shape[1] != state.embeddings.shape[1]:
        raise ValueError(
            f"gallery_embeddings have {embeddings.shape[1]} channels; fam.embed gives "
            f"{state.embeddings.shape[1]}"
        )
    scores = torch.cat(
        [
            _score_block(fam, state.embeddings, embeddings[i : i + batch_size])
            for i in range(0, size, batch_size)
        ],
        dim=1,
    )
    top_scores, indices = scores.topk(k, dim=1)
    kwargs: dict[str, Any] = {
        "relu_attributions": relu_attributions,
        "normalize_weights": normalize_weights,
    }
    maps = torch.cat([fam._maps(state, embeddings[indices[:, j]], **kwargs) for j in range(k)], 1)

    gallery_maps = None
    if gallery_batch is not None:
        retrieved = tuple(t[indices.flatten().to(t.device)] for t in gallery_batch)
        retrieved_state = fam._queries(retrieved, None, False)
        query_rows = state.embeddings.repeat_interleave(k, dim=0)
        gallery_maps = fam._maps(retrieved_state, query_rows, **kwargs)
        gallery_maps = gallery_maps.reshape(indices.shape[0], k, *gallery_maps.shape[-2:])
    device = batch[0].device
    return RetrievalExplanation(
        indices=indices.to(device),
        scores=top_scores.to(device),
        maps=maps.to(device),
        gallery_maps=None if gallery_maps is None else gallery_maps.to(device),
    )


def _score_block(fam: FeatureActivationMap, queries: Tensor, block: Tensor) -> Tensor:
    """Scores (N, B) of every query against every row of a gallery block."""
    n, b = queries.shape[0], block.shape[0]
    query_rows = queries.repeat_interleave(b, dim=0)
    block_rows = block.repeat(n, 1)
    fam.similarity.validate(query_rows, block_rows)
    return fam.similarity.score(query_rows, block_rows).reshape(n, b)
