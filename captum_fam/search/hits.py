"""Search hits explained against the vectors the index scored."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam._checks import TensorOrTuple, format_batch
from captum_fam._engine import Engine, Queries
from captum_fam.attribution import FeatureActivationMap
from captum_fam.search.indexes import (
    METRIC_L2,
    METRIC_NAMES,
    VectorIndex,
    check_count,
    float32_rows,
    metric_of,
    normalize,
    reconstruct,
    search_result,
)
from captum_fam.similarity import (
    CosineSimilarity,
    DotSimilarity,
    EuclideanSimilarity,
    Similarity,
)
from captum_fam.tasks import RetrievalExplanation

__all__ = ["SearchExplanation", "SearchGap", "explain_search"]

_UNIT_TOLERANCE = 1e-3  # |norm - 1| below which stored vectors count as unit length
_SCORE_TOLERANCE = 1e-3  # relative to the scale of the scores: float32 sums of D terms


@dataclass
class SearchGap:
    """The explanation against what the index scored, next to the re-embedded items.

    ``compare=True`` of :func:`explain_search` fills it. The "exact vector" of an item is the
    one an exact index would hold: ``fam.embed`` of the item, normalised for a cosine index.
    For an exact index (flat, IVF-flat, HNSW-flat) the gap is float rounding; for lossy
    codes (PQ, SQ) it shows what the compression changed.

    Attributes:
        scores (Tensor): ``(N, k)`` the index's score formula applied to the exact vectors
                    (inner product, or squared distance for L2).
        score_gap (Tensor): ``(N, k)`` the index's scores minus ``scores``.
        maps (Tensor): ``(N, k, *S)`` the query's maps against the exact vectors.
        map_correlation (Tensor): ``(N, k)`` Pearson correlation of each map against the
                    reconstruction with the map against the exact vector (NaN where either
                    map is constant, e.g. all zero).
        vector_error (Tensor): ``(N, k)`` ``|reconstruction - exact| / |exact|``.
    """

    scores: Tensor
    score_gap: Tensor
    maps: Tensor
    map_correlation: Tensor
    vector_error: Tensor


@dataclass
class SearchExplanation(RetrievalExplanation):
    """Each query's hits in a vector index, explained (a :class:`RetrievalExplanation`).

    Attributes:
        indices (Tensor): ``(N, k)`` the ids the index returned, best first.
        scores (Tensor): ``(N, k)`` the index's numbers: inner products, or squared L2
                    distances (smaller is closer).
        maps (Tensor): ``(N, k, *S)`` the query against each hit's reconstructed vector;
                    each explains ``explained_scores``.
        gallery_maps (Tensor or None): ``(N, k, *S')`` each re-embedded item against the
                    query (with ``load_items``), for ``fam``'s similarity.
        explained_scores (Tensor): ``(N, k)`` the score the maps explain, in FAM's sense
                    (larger is more similar): ``scores`` for an inner-product index, ``-scores``
                    for L2, up to float rounding (a warning says when an index scores
                    otherwise, e.g. after a PCA pre-transform).
        vectors (Tensor): ``(N, k, d)`` the hits' vectors as the index reconstructs them.
        metric (str): ``"inner_product"`` or ``"l2"``.
        similarity (str): ``"dot"``, ``"cosine"`` or ``"euclidean"``.
        gap (SearchGap or None): Against the re-embedded items (``compare=True``).
    """

    explained_scores: Tensor | None = None
    vectors: Tensor | None = None
    metric: str = ""
    similarity: str = ""
    gap: SearchGap | None = None


class _NormalizedQueryDot(Similarity):
    r"""``q . r / |q|``: the score of a cosine index, searched with the normalised query.

    It is ``cos(q, r)`` when ``r`` has unit length, and stays the index's own number when a
    lossy code reconstructs ``r`` with a norm slightly off 1. Coefficients ``r / |q|`` with the
    query's norm held fixed, as for :class:`~captum_fam.similarity.CosineSimilarity`.
    """

    name = "cosine"

    def score(self, query: Tensor, reference: Tensor) -> Tensor:
        return (query * self.coefficients(query, reference)).sum(1)

    def coefficients(self, query: Tensor, reference: Tensor) -> Tensor:
        return reference / query.norm(dim=1, keepdim=True)

    def validate(self, query: Tensor, reference: Tensor) -> None:
        CosineSimilarity().validate(query, query)  # only the query is divided by its norm


@torch.no_grad()
def explain_search(
    fam: FeatureActivationMap,
    queries: TensorOrTuple,
    index: VectorIndex,
    k: int = 5,
    load_items: Callable[[Tensor], TensorOrTuple] | None = None,
    compare: bool = False,
    normalized: bool | None = None,
    batch_size: int = 64,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
    additional_forward_args: Any = None,
    pooling_mask: int | None = None,
) -> SearchExplanation:
    r"""Search a vector index for each query and explain every hit with the index's vectors.

    One query forward, one ``index.search``, one reconstruction of the N * k hits, and k maps
    from the query's activations; with ``load_items`` one more forward for the hits (in
    chunks of ``batch_size``) for the gallery-side maps. The index must hold vectors in the
    space of ``fam.embed``: the model's output for ``embedding="output"`` (the default), the
    pooled layer for ``embedding="layer"``.

    The index's metric must match ``fam``'s similarity: an inner-product index is explained
    with ``"dot"``, or with ``"cosine"`` when it holds unit-length vectors (then the query is
    normalised before the search, and the score is the cosine); an L2 index with
    ``"euclidean"``, whose score ``-|q - r|^2`` is minus the index's squared distance.

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        queries (Tensor or tuple[Tensor, ...]): N query inputs.
        index (VectorIndex): A FAISS index or any object with its ``search``,
                    ``reconstruct_batch`` (or ``reconstruct``) and ``metric_type``.
        k (int, optional): Hits per query. Default: 5
        load_items (Callable, optional): ``load_items(ids)`` returns the model inputs of the
                    items with these ids (a 1-D int64 CPU tensor), in that order: enables
                    ``gallery_maps`` and ``compare``. Default: None
        compare (bool, optional): Also explain each query against the re-embedded items and
                    report the gap to what the index scored (:class:`SearchGap`); needs
                    ``load_items``. Default: False
        normalized (bool, optional): For a cosine model over an inner-product index: whether
                    the index holds unit-length vectors. None detects it from the hits' norms
                    (within 1e-3 of 1); declare True for lossy codes of unit vectors, whose
                    reconstructions are only close to unit length. Default: None
        batch_size (int, optional): Items per forward for ``load_items``. Default: 64
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.
        additional_forward_args (Any, optional): Passed to every forward. Default: None
        pooling_mask (int, optional): Index of the pooling mask among the inputs (queries and
                    loaded items). Default: None

    Returns:
        :class:`SearchExplanation`: ``indices``, ``scores`` (the index's), ``maps``
        ``(N, k, *S)``, ``gallery_maps``, ``explained_scores``, ``vectors``, ``metric``,
        ``similarity`` and ``gap``.

    Examples::

        >>> index = build_index(fam, gallery_embeddings, "IVF256,PQ16np")  # or faiss.read_index
        >>> hits = explain_search(fam, query, index, k=10, normalized=True)
        >>> hits.indices[0], hits.scores[0], hits.maps.shape
        >>> hits = explain_search(fam, query, index, k=10, load_items=load, compare=True)
        >>> hits.gap.score_gap, hits.gap.map_correlation
    """
    engine = fam.engine
    batch = format_batch(queries, "queries")
    metric = metric_of(index)
    explained = _explained_similarity(engine.similarity, metric)
    _check_normalized(normalized, explained)
    check_count(k, "k", getattr(index, "ntotal", None), "the number of vectors in the index")
    check_count(batch_size, "batch_size")
    if compare and load_items is None:
        raise ValueError("compare=True re-embeds the retrieved items: pass load_items")
    if load_items is not None and not callable(load_items):
        raise TypeError(
            f"load_items must be a callable ids -> inputs; got {type(load_items).__name__}"
        )
    if pooling_mask is not None and (
        isinstance(pooling_mask, bool) or not isinstance(pooling_mask, int)
    ):
        raise TypeError(
            "pooling_mask must be the index of the mask among the inputs (queries and loaded "
            f"items each bring their own); got {type(pooling_mask).__name__}"
        )
    args = additional_forward_args

    state = engine.queries(batch, args, False, pooling_mask)
    embeddings = state.embeddings
    n, dim = embeddings.shape
    index_dim = getattr(index, "d", None)
    if index_dim is not None and int(index_dim) != dim:
        raise ValueError(_dimension_message(int(index_dim), dim, engine.embedding))
    explained.validate(embeddings, embeddings)
    sent = normalize(embeddings) if explained.name == "cosine" else embeddings
    raw_scores, raw_ids = index.search(float32_rows(sent), k)
    scores, ids = search_result(raw_scores, raw_ids, n, k)
    vectors = reconstruct(index, ids.flatten(), dim).to(embeddings)
    if explained.name == "cosine":
        _check_unit_norms(vectors, normalized)

    rows = vectors.reshape(n, k, dim)
    explained_scores = torch.stack(
        [explained.score(embeddings, rows[:, j]) for j in range(k)], dim=1
    )
    index_scores = scores.to(embeddings)
    _check_scores(index_scores, explained_scores, metric, sent, rows)
    options = (relu_attributions, normalize_weights)
    maps = _maps(engine, state, explained, rows, options)

    gallery_maps = gap = None
    if load_items is not None:
        gallery_maps, exact = _explain_items(
            engine, load_items, ids, embeddings, batch_size, args, pooling_mask, options
        )
        if compare:
            if explained.name == "cosine":
                exact = normalize(exact)
            gap = _gap(engine, state, explained, metric, sent, rows, exact, index_scores, maps,
                       options)  # fmt: skip

    device = batch[0].device
    return SearchExplanation(
        indices=ids.to(device),
        scores=index_scores.to(device),
        maps=maps.to(device),
        gallery_maps=None if gallery_maps is None else gallery_maps.to(device),
        explained_scores=explained_scores.to(device),
        vectors=rows.to(device),
        metric=METRIC_NAMES[metric],
        similarity=explained.name,
        gap=None if gap is None else SearchGap(*(t.to(device) for t in gap)),
    )


def _explained_similarity(similarity: Similarity, metric: int) -> Similarity:
    """The similarity whose score is the index's number (up to sign for L2)."""
    kind = type(similarity)
    if metric == METRIC_L2:
        if kind is EuclideanSimilarity:
            return similarity
        raise ValueError(
            "the index measures squared L2 distances: explain it with "
            f"FeatureActivationMap(..., similarity='euclidean') (fam compares with "
            f"{similarity.name!r}), or search an inner-product index"
        )
    if kind is DotSimilarity:
        return similarity
    if kind is CosineSimilarity:
        return _NormalizedQueryDot()
    raise ValueError(
        "the index scores inner products: explain it with FeatureActivationMap(..., "
        "similarity='dot'), or similarity='cosine' when it holds unit-length vectors "
        f"(fam compares with {similarity.name!r})"
    )


def _check_normalized(normalized: bool | None, explained: Similarity) -> None:
    if normalized is None:
        return
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be True, False or None; got {normalized!r}")
    if explained.name != "cosine":
        raise ValueError(
            "normalized applies to a cosine model over an inner-product index; fam's "
            f"similarity is {explained.name!r}"
        )
    if not normalized:
        raise ValueError(
            "normalized=False: an inner-product index over vectors that are not unit length "
            "does not rank by cosine. Explain it with similarity='dot', or rebuild the index "
            "from normalised vectors (faiss.normalize_L2 before index.add)"
        )


def _check_unit_norms(vectors: Tensor, normalized: bool | None) -> None:
    if normalized:
        return
    norms = vectors.norm(dim=1)
    off = float((norms - 1).abs().max())
    if off > _UNIT_TOLERANCE:
        raise ValueError(
            "fam's similarity is 'cosine' but the hits' vectors are not unit length (norms "
            f"{float(norms.min()):.4g} to {float(norms.max()):.4g}), so the index's inner "
            "products are not cosines: rebuild the index from normalised vectors "
            "(faiss.normalize_L2 before index.add), explain it with similarity='dot', or "
            "declare normalized=True if unit vectors went into a lossy code (PQ, SQ), whose "
            "reconstructions are only close to unit length"
        )


def _check_scores(
    index_scores: Tensor, explained: Tensor, metric: int, sent: Tensor, rows: Tensor
) -> None:
    """Warn when the index's numbers are not the explained score of its reconstructions."""
    query_norms = sent.norm(dim=1, keepdim=True)
    row_norms = rows.norm(dim=2)
    if metric == METRIC_L2:
        difference = (index_scores + explained).abs()
        scale = query_norms**2 + row_norms**2
    else:
        difference = (index_scores - explained).abs()
        scale = query_norms * row_norms
    if bool((difference > _SCORE_TOLERANCE * scale + 1e-5).any()):
        relation = "-explained_scores" if metric == METRIC_L2 else "explained_scores"
        warnings.warn(
            f"the index's scores differ from {relation} (the score of the query and the "
            f"reconstructed vectors) by up to {float(difference.max()):.4g}: the index scores "
            "something other than its reconstructions (a pre-transform such as PCA, quantised "
            "lookup tables). The maps explain explained_scores",
            stacklevel=4,  # the caller of explain_search (through torch.no_grad's wrapper)
        )


def _dimension_message(index_dim: int, dim: int, embedding: str) -> str:
    space = "the model's output" if embedding == "output" else "the layer's pooled channels"
    return (
        f"the index holds {index_dim}-dimensional vectors but fam.embed gives {dim} "
        f"({space}, embedding={embedding!r}): the index must hold vectors in the space of "
        "fam.embed (embedding='output' for an index of the model's output embeddings, "
        "embedding='layer' for pooled layer channels)"
    )


def _maps(
    engine: Engine,
    state: Queries,
    similarity: Similarity,
    rows: Tensor,
    options: tuple[bool, bool],
) -> Tensor:
    """``(N, k, *S)`` maps of the queries against rows ``(N, k, d)``, one pull-back per hit."""
    return torch.cat(
        [
            engine.maps(
                state,
                engine.channel_coefficients(
                    state, similarity.coefficients(state.embeddings, rows[:, j])
                ),
                *options,
            )
            for j in range(rows.shape[1])
        ],
        dim=1,
    )


def _explain_items(
    engine: Engine,
    load_items: Callable[[Tensor], TensorOrTuple],
    ids: Tensor,
    query_embeddings: Tensor,
    batch_size: int,
    args: Any,
    pooling_mask: int | None,
    options: tuple[bool, bool],
) -> tuple[Tensor, Tensor]:
    """Each hit against its query, ``batch_size`` items per forward: maps ``(N, k, *S')``
    and the items' embeddings ``(N * k, d)`` (only those are kept between chunks)."""
    n, k = ids.shape
    flat = ids.flatten()
    query_rows = query_embeddings.repeat_interleave(k, dim=0)
    maps, embeddings = [], []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        inputs = format_batch(load_items(chunk.clone()), "load_items(ids)")
        if inputs[0].shape[0] != len(chunk):
            raise ValueError(
                f"load_items returned {inputs[0].shape[0]} items for {len(chunk)} ids; it must "
                "return the inputs of exactly these items, in order"
            )
        state = engine.queries(inputs, args, False, pooling_mask)
        rows = query_rows[start : start + len(chunk)].to(state.embeddings)
        maps.append(engine.explain(state, rows, None, None, *options))
        embeddings.append(state.embeddings.to(query_embeddings))
    gallery_maps = torch.cat(maps)
    return gallery_maps.reshape(n, k, *gallery_maps.shape[2:]), torch.cat(embeddings)


def _gap(
    engine: Engine,
    state: Queries,
    similarity: Similarity,
    metric: int,
    sent: Tensor,
    rows: Tensor,
    exact: Tensor,
    index_scores: Tensor,
    maps: Tensor,
    options: tuple[bool, bool],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    n, k, dim = rows.shape
    exact = exact.reshape(n, k, dim)
    if metric == METRIC_L2:
        exact_scores = (sent[:, None] - exact).pow(2).sum(2)
    else:
        exact_scores = (sent[:, None] * exact).sum(2)
    exact_maps = _maps(engine, state, similarity, exact, options)
    error = (rows - exact).norm(dim=2) / exact.norm(dim=2)
    return (
        exact_scores,
        index_scores - exact_scores,
        exact_maps,
        _pearson(maps.flatten(2), exact_maps.flatten(2)),
        error,
    )


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Correlation along the last dimension; NaN where either side is constant."""
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    denominator = a.norm(dim=-1) * b.norm(dim=-1)
    correlation = (a * b).sum(-1) / denominator
    return torch.where(denominator > 0, correlation, torch.full_like(correlation, math.nan))
