"""Task helpers: FAM for pairs, few-shot prototypes and retrieval, batched.

Each helper runs the network once per input set (queries, support, gallery) and then computes
any number of maps with cheap tensor work, because a FAM map only needs the query's
activations and the reference's embedding. Each map equals the corresponding
``fam.attribute`` call (the tests check it). The helpers compute through ``fam.engine``, like
``fam.attribute`` does, and take ``additional_forward_args`` (passed to every forward: queries,
support, gallery) and ``pooling_mask`` (the index of the mask among the inputs, for padded
sequences) as it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam._checks import (
    TensorOrTuple,
    check_like,
    format_batch,
    format_embeddings,
    one_of,
)
from captum_fam._engine import Engine
from captum_fam._engine.pairs import token_pairs as token_pair_matrix
from captum_fam._engine.pooling import PoolingMask
from captum_fam._engine.references import plan_references
from captum_fam.attribution import FeatureActivationMap

__all__ = [
    "PairExplanation",
    "PrototypeExplanation",
    "RetrievalExplanation",
    "class_prototypes",
    "explain_pair",
    "explain_prototypes",
    "explain_retrieval",
]


@dataclass
class PairExplanation:
    """Both sides of N pairs: ``maps_a`` (a against b), ``maps_b`` (b against a), ``scores``.

    ``token_pairs`` (with ``explain_pair(..., token_pairs=True)``): ``(N, *S, *S')``, the score
    of each pair decomposed over pairs of positions (token ``i`` of ``a`` with token ``j`` of
    ``b``), summing to ``scores``; None otherwise.
    """

    maps_a: Tensor  # (N, 1, *S)
    maps_b: Tensor  # (N, 1, *S')
    scores: Tensor  # (N,)
    token_pairs: Tensor | None = None  # (N, *S, *S')


@dataclass
class PrototypeExplanation:
    """Each query against every class prototype of an N-way K-shot episode."""

    classes: Tensor  # (W,) the support labels, sorted
    scores: Tensor  # (N, W) similarity to each prototype
    prediction: Tensor  # (N,) the class of the most similar prototype
    maps: Tensor  # (N, W, *S) one map per way
    prototypes: Tensor  # (W, D) mean support embeddings


@dataclass
class RetrievalExplanation:
    """Each query against its top-k gallery items."""

    indices: Tensor  # (N, k) gallery rows, most similar first
    scores: Tensor  # (N, k)
    maps: Tensor  # (N, k, *S) the query against each retrieved item
    gallery_maps: Tensor | None  # (N, k, *S') each item against the query (gallery inputs)


def class_prototypes(
    embeddings: Tensor, labels: Tensor, normalize: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Class prototypes: the mean embedding of each class, as prototypical networks use them.

    Args:
        embeddings (Tensor): ``(S, D)`` support embeddings (:meth:`FeatureActivationMap.embed`).
        labels (Tensor): ``(S,)`` integer class labels.
        normalize (bool, optional): Average unit-length embeddings (the usual prototype for a
                    cosine model, where an embedding's length carries no class information).
                    Default: False

    Returns:
        tuple[Tensor, Tensor]: ``classes (W,)`` (the labels, sorted) and ``prototypes (W, D)``.

    Examples::

        >>> classes, prototypes = class_prototypes(fam.embed(support), support_labels)
        >>> maps = fam.attribute(queries, reference_embeddings=prototypes[0])
    """
    embeddings = format_embeddings(embeddings, "embeddings")
    if not isinstance(labels, Tensor) or labels.shape != (embeddings.shape[0],):
        raise ValueError(
            f"labels must be a tensor of {embeddings.shape[0]} labels, one per embedding; got "
            + (
                f"shape {tuple(labels.shape)}"
                if isinstance(labels, Tensor)
                else type(labels).__name__
            )
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class labels; got {labels.dtype}")
    if normalize:
        embeddings = torch.nn.functional.normalize(embeddings, dim=1)
    classes, ways = torch.unique(labels.to(embeddings.device), return_inverse=True)
    counts = torch.bincount(ways, minlength=len(classes)).to(embeddings.dtype)
    sums = torch.zeros(len(classes), embeddings.shape[1], dtype=embeddings.dtype,
                       device=embeddings.device).index_add_(0, ways, embeddings)  # fmt: skip
    return classes, sums / counts[:, None]


@torch.no_grad()
def explain_pair(
    fam: FeatureActivationMap,
    a: TensorOrTuple,
    b: TensorOrTuple,
    foil: TensorOrTuple | None = None,
    foil_embeddings: Tensor | None = None,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
    additional_forward_args: Any = None,
    pooling_mask: int | None = None,
    token_pairs: bool = False,
) -> PairExplanation:
    r"""Explain N pairs from both sides: what in ``a`` matches ``b``, and the reverse.

    Two forwards in all (one per side). With a foil, each side's map is contrastive: why ``a``
    matches ``b`` rather than the foil, and why ``b`` matches ``a`` rather than the foil.

    With ``token_pairs=True`` the score of each pair is also decomposed over pairs of
    positions, for mean-pooled ``"dot"`` and ``"cosine"`` (exactly:
    ``cos = sum_ij <a_i, b_j> / (n m |e_a| |e_b|)`` over the ``n`` and ``m`` valid tokens): entry
    ``[k, i, j]`` is what token ``i`` of ``a`` and token ``j`` of ``b`` contribute together. The
    matrix sums to the score; row ``i`` sums to ``a``'s raw reference-weighted map at ``i``
    divided by ``n`` (column ``j``: ``b``'s at ``j`` divided by ``m``). With
    ``embedding="output"`` the terms are ``<W a_i + b, W b_j + b>`` for an output
    ``o = W e + b`` affine in the mean-pooled layer; other heads (class-token or pooler
    pooling, a normalisation) and similarities without a pair decomposition (``"euclidean"``,
    custom ones) raise a ValueError. Masked positions are 0. For sentences, pass
    ``relu_attributions=False`` to see what pulls the score up and what pulls it down.

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        a (Tensor or tuple[Tensor, ...]): N inputs.
        b (Tensor or tuple[Tensor, ...]): N inputs, pair i is ``(a[i], b[i])``.
        foil (Tensor or tuple[Tensor, ...], optional): Foil inputs (1 or N). Default: None
        foil_embeddings (Tensor, optional): Or foil embeddings (1 or N rows). Default: None
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.
        additional_forward_args (Any, optional): Passed to every forward. Default: None
        pooling_mask (int, optional): Index of the pooling mask among the inputs of each side
                    (``1`` for ``(input_ids, attention_mask)``). Default: None
        token_pairs (bool, optional): Also return the pair matrix (see above). Not combined
                    with a foil. Default: False

    Returns:
        :class:`PairExplanation` with ``maps_a``, ``maps_b`` ``(N, 1, *S)``, ``scores``
        ``(N,)`` and, with ``token_pairs=True``, ``token_pairs`` ``(N, *S_a, *S_b)``.

    Examples::

        >>> result = explain_pair(fam, faces_a, faces_b)
        >>> result.scores, result.maps_a.shape
        >>> fam = FeatureActivationMap(encoder, encoder.layers[-1], token_layout="sequence")
        >>> pair = explain_pair(fam, (ids_a, mask_a), (ids_b, mask_b), pooling_mask=1,
        ...                     relu_attributions=False, token_pairs=True)
        >>> pair.token_pairs.sum(dim=(1, 2))      # == pair.scores
    """
    engine = fam.engine
    side_a, side_b = format_batch(a, "a"), format_batch(b, "b")
    n = side_a[0].shape[0]
    if side_b[0].shape[0] != n:
        raise ValueError(f"a and b must hold the same number of examples; got {n} and "
                         f"{side_b[0].shape[0]}")  # fmt: skip
    check_like(side_b, side_a, "b", "a")
    check_mask_index(pooling_mask)
    if token_pairs and (foil is not None or foil_embeddings is not None):
        raise ValueError(
            "token_pairs=True decomposes s(a, b) over token pairs; with a foil the score "
            "explained is s(a, b) - s(a, foil), which has a third sentence: drop the foil or "
            "token_pairs"
        )
    foil_plan = plan_references(n, side_a, foil, foil_embeddings, "foil", required=False)
    args = additional_forward_args
    queries_a = engine.queries(side_a, args, False, pooling_mask)
    queries_b = engine.queries(side_b, args, False, pooling_mask)
    foil_rows = (
        None if foil_plan is None else engine.rows(foil_plan, queries_a.embeddings, args,
                                                    False, pooling_mask)
    )  # fmt: skip
    embeddings_a, embeddings_b = queries_a.embeddings, queries_b.embeddings
    fam.similarity.validate(embeddings_a, embeddings_b)
    maps_a = engine.explain(queries_a, embeddings_b, foil_rows, None, relu_attributions,
                            normalize_weights)  # fmt: skip
    maps_b = engine.explain(queries_b, embeddings_a, foil_rows, None, relu_attributions,
                            normalize_weights)  # fmt: skip
    pairs = token_pair_matrix(engine, queries_a, queries_b) if token_pairs else None
    device = side_a[0].device
    return PairExplanation(
        maps_a.to(device),
        maps_b.to(device),
        engine.scores(embeddings_a, embeddings_b).to(device),
        None if pairs is None else pairs.to(device),
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
    additional_forward_args: Any = None,
    pooling_mask: int | None = None,
) -> PrototypeExplanation:
    r"""Explain an N-way K-shot episode: each query against every class prototype.

    A prototype is the mean support embedding of a class (:func:`class_prototypes`, as in
    prototypical networks). One forward for the support set and one for the queries; the W
    maps per query are tensor work.

    With ``contrastive=True`` each map explains the N-way decision itself: the way's channel
    weights minus the softmax-weighted mixture of all ways' weights, with probabilities
    ``softmax(scores / temperature)``. That is the gradient of the way's log-probability with
    respect to the query embedding, norms held fixed, in closed form: evidence shared by all
    classes cancels, and what sets this class apart remains.

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        queries (Tensor or tuple[Tensor, ...]): N query inputs.
        support (Tensor or tuple[Tensor, ...]): The support inputs of the episode.
        support_labels (Tensor): Their integer labels, one per support example.
        contrastive (bool, optional): Explain the decision among the ways. Default: False
        temperature (float, optional): The classifier's logits are ``scores / temperature``
                    (only used when ``contrastive``). Default: 1.0
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.
        additional_forward_args (Any, optional): Passed to every forward. Default: None
        pooling_mask (int, optional): Index of the pooling mask among the inputs.
                    Default: None

    Returns:
        :class:`PrototypeExplanation` with ``classes (W,)``, ``scores (N, W)``,
        ``prediction (N,)``, ``maps (N, W, *S)`` and ``prototypes (W, D)``.

    Examples::

        >>> episode = explain_prototypes(fam, queries, support, support_labels)
        >>> episode.prediction, episode.maps[:, 0]     # maps against the first class
    """
    engine = fam.engine
    batch = format_batch(queries, "queries")
    support_batch = format_batch(support, "support")
    if not isinstance(support_labels, Tensor) or support_labels.shape != (
        support_batch[0].shape[0],
    ):
        raise ValueError(
            f"support_labels must be a tensor of {support_batch[0].shape[0]} labels, one per "
            "support example"
        )
    if support_labels.is_floating_point():
        raise TypeError(f"support_labels must be integer class labels; got {support_labels.dtype}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive; got {temperature}")
    check_mask_index(pooling_mask)
    args = additional_forward_args
    state = engine.queries(batch, args, False, pooling_mask)
    support_embeddings = engine.embed(support_batch, args, False, pooling_mask, "support")
    classes, prototypes = class_prototypes(support_embeddings, support_labels)
    prototypes = prototypes.to(state.embeddings)

    scores = engine.score_matrix(state.embeddings, prototypes)
    n, ways = state.count, len(classes)
    coefficients = fam.similarity.coefficients(
        state.embeddings.repeat_interleave(ways, dim=0), prototypes.repeat(n, 1)
    ).reshape(n, ways, -1)
    if contrastive:
        probabilities = torch.softmax(scores / temperature, dim=1)
        mixture = (probabilities[:, :, None] * coefficients).sum(dim=1, keepdim=True)
        coefficients = coefficients - mixture
    maps = torch.cat(
        [
            engine.maps(
                state,
                engine.channel_coefficients(state, coefficients[:, way]),
                relu_attributions,
                normalize_weights,
            )
            for way in range(ways)
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
    additional_forward_args: Any = None,
    pooling_mask: int | None = None,
) -> RetrievalExplanation:
    r"""Retrieve each query's top-k gallery items and explain every match.

    Gallery embeddings are computed once, ``batch_size`` items at a time (only the
    embeddings are kept), or taken precomputed (:meth:`FeatureActivationMap.embed`). Scoring
    runs in gallery chunks of ``batch_size`` too, so memory stays bounded for large galleries.
    With cached embeddings the cost is one query forward plus tensor work for the k maps.
    With gallery inputs, the retrieved items are also explained against the query
    (``gallery_maps``, one more forward for the N * k retrieved items).

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        queries (Tensor or tuple[Tensor, ...]): N query inputs.
        gallery (Tensor or tuple[Tensor, ...], optional): G gallery inputs.
        gallery_embeddings (Tensor, optional): Or their ``(G, D)`` embeddings. Exactly one of
                    the two is given.
        k (int, optional): Items retrieved per query. Default: 5
        batch_size (int, optional): Gallery items per forward and gallery rows per scoring
                    chunk. Default: 64
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.
        additional_forward_args (Any, optional): Passed to every forward. Default: None
        pooling_mask (int, optional): Index of the pooling mask among the inputs.
                    Default: None

    Returns:
        :class:`RetrievalExplanation` with ``indices`` and ``scores`` ``(N, k)``, ``maps``
        ``(N, k, *S)`` and ``gallery_maps`` ``(N, k, *S')`` (None for embeddings).

    Examples::

        >>> gallery_embeddings = torch.cat([fam.embed(chunk) for chunk in gallery.split(256)])
        >>> hits = explain_retrieval(fam, query, gallery_embeddings=gallery_embeddings, k=10)
        >>> hits.indices[0], hits.scores[0]
    """
    check_mask_index(pooling_mask)
    return retrieve(
        fam.engine,
        format_batch(queries, "queries"),
        fam.engine,
        None if gallery is None else format_batch(gallery, "gallery"),
        gallery_embeddings,
        k,
        batch_size,
        {"relu_attributions": relu_attributions, "normalize_weights": normalize_weights},
        (additional_forward_args, additional_forward_args),
        (pooling_mask, pooling_mask),
    )


def retrieve(
    query_engine: Engine,
    batch: tuple[Tensor, ...],
    gallery_engine: Engine,
    gallery_batch: tuple[Tensor, ...] | None,
    gallery_embeddings: Tensor | None,
    k: int,
    batch_size: int,
    explain: dict[str, Any],
    forward_args: tuple[Any, Any],
    pooling_masks: tuple[int | None, int | None],
) -> RetrievalExplanation:
    """:func:`explain_retrieval` with a model per side (one for images, one for texts)."""
    one_of(gallery_batch, gallery_embeddings, ("gallery", "gallery_embeddings"))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    (query_args, gallery_args), (query_mask, gallery_mask) = forward_args, pooling_masks
    if gallery_batch is not None:
        gallery_embeddings = torch.cat(
            [
                gallery_engine.embed(
                    tuple(t[i : i + batch_size] for t in gallery_batch),
                    gallery_args,
                    False,
                    gallery_mask,
                    "gallery",
                )  # fmt: skip
                for i in range(0, gallery_batch[0].shape[0], batch_size)
            ]
        )
    embeddings = format_embeddings(gallery_embeddings, "gallery_embeddings")
    size = embeddings.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= size:
        raise ValueError(f"k must be an int between 1 and the gallery size {size}; got {k!r}")

    state = query_engine.queries(batch, query_args, False, query_mask)
    embeddings = embeddings.to(device=state.embeddings.device, dtype=state.embeddings.dtype)
    if embeddings.shape[1] != state.embeddings.shape[1]:
        raise ValueError(
            f"gallery_embeddings have {embeddings.shape[1]} channels; the queries' embeddings "
            f"have {state.embeddings.shape[1]}"
        )
    scores = torch.cat(
        [
            query_engine.score_matrix(state.embeddings, embeddings[i : i + batch_size])
            for i in range(0, size, batch_size)
        ],
        dim=1,
    )
    top_scores, indices = scores.topk(k, dim=1)
    maps = torch.cat(
        [query_engine.explain(state, embeddings[indices[:, j]], **explain) for j in range(k)],
        dim=1,
    )

    gallery_maps = None
    if gallery_batch is not None:
        retrieved = tuple(t[indices.flatten().to(t.device)] for t in gallery_batch)
        retrieved_state = gallery_engine.queries(retrieved, gallery_args, False, gallery_mask)
        query_rows = state.embeddings.repeat_interleave(k, dim=0)
        gallery_maps = gallery_engine.explain(retrieved_state, query_rows, **explain)
        gallery_maps = gallery_maps.reshape(indices.shape[0], k, *gallery_maps.shape[2:])
    device = batch[0].device
    return RetrievalExplanation(
        indices=indices.to(device),
        scores=top_scores.to(device),
        maps=maps.to(device),
        gallery_maps=None if gallery_maps is None else gallery_maps.to(device),
    )


def check_mask_index(pooling_mask: PoolingMask) -> None:
    # Several input sets run through one call: each brings its own mask, found by index.
    if pooling_mask is not None and (
        isinstance(pooling_mask, bool) or not isinstance(pooling_mask, int)
    ):
        raise TypeError(
            "pooling_mask of a task helper must be the index of the mask among the inputs (each "
            f"input set brings its own); got {type(pooling_mask).__name__}"
        )
