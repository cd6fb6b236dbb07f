"""Vector indexes: the FAISS interface, building one, searching it, reading its vectors back.

FAISS is imported only by :func:`build_index`; everything else works with any object that has
FAISS's interface (:class:`VectorIndex`).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from captum_fam._checks import format_embeddings
from captum_fam.attribution import FeatureActivationMap
from captum_fam.similarity import (
    CosineSimilarity,
    DotSimilarity,
    EuclideanSimilarity,
)

__all__ = [
    "METRIC_INNER_PRODUCT",
    "METRIC_L2",
    "METRIC_NAMES",
    "VectorIndex",
    "build_index",
    "check_count",
    "float32_rows",
    "import_faiss",
    "metric_of",
    "normalize",
    "reconstruct",
    "search_result",
]

METRIC_INNER_PRODUCT = 0
"""``faiss.METRIC_INNER_PRODUCT``: ``search`` returns inner products, largest first."""
METRIC_L2 = 1
"""``faiss.METRIC_L2``: ``search`` returns squared Euclidean distances, smallest first."""

METRIC_NAMES = {METRIC_INNER_PRODUCT: "inner_product", METRIC_L2: "l2"}


class VectorIndex(Protocol):
    """What :func:`explain_search` needs of an index: FAISS's interface.

    ``search`` takes ``(N, d)`` float32 queries (a C-contiguous ``numpy`` array) and returns
    ``(scores, ids)``, two ``(N, k)`` arrays (or tensors), best first, id -1 for a missing hit.
    ``reconstruct_batch`` takes an int64 array of ids and returns their ``(M, d)`` vectors;
    indexes without it may offer ``reconstruct(id)`` or ``reconstruct_n(first, count)``.
    ``metric_type`` is :data:`METRIC_INNER_PRODUCT` or :data:`METRIC_L2`; ``d`` and
    ``ntotal`` (the dimension and the number of vectors) are checked when present.
    """

    metric_type: int

    def search(self, x: np.ndarray, k: int) -> tuple[Any, Any]: ...

    def reconstruct_batch(self, keys: np.ndarray) -> Any: ...


def build_index(
    fam: FeatureActivationMap,
    embeddings: Tensor,
    factory: str = "Flat",
    train_size: int | None = None,
    seed: int = 0,
) -> Any:
    r"""Build a FAISS index over gallery embeddings, with the metric ``fam`` explains.

    ``"cosine"`` gives an inner-product index over unit-length vectors (the embeddings are
    normalised before they are added), ``"dot"`` an inner-product index, ``"euclidean"`` an L2
    index. IVF indexes get a direct map (8 bytes per vector), so that they can reconstruct
    their vectors for :func:`explain_search`.

    Args:
        fam (FeatureActivationMap): Decides the metric; the embeddings are ``fam.embed``'s.
        embeddings (Tensor): ``(M, d)`` gallery embeddings; row i gets id i.
        factory (str, optional): A ``faiss.index_factory`` description: ``"Flat"`` (exact),
                    ``"IVF1024,PQ16np"`` (inverted lists of 16-byte product codes; ``np``
                    skips the polysemous training FAISS otherwise runs for PQ codes, minutes
                    of work that only polysemous search uses), ``"HNSW32"``, ...
                    Default: ``"Flat"``
        train_size (int, optional): Train on this many rows drawn at random (indexes that
                    need training: IVF, PQ, SQ). None trains on all rows (FAISS itself
                    subsamples its k-means to 256 points per centroid). Default: None
        seed (int, optional): Seed of that draw. Default: 0

    Returns:
        The trained, filled ``faiss.Index``; save it with ``faiss.write_index(index, path)``.

    Examples::

        >>> embeddings = torch.cat([fam.embed(chunk) for chunk in gallery.split(256)])
        >>> flat = build_index(fam, embeddings)
        >>> compressed = build_index(fam, embeddings, "IVF64,PQ16np", train_size=5000)
    """
    faiss = import_faiss()
    embeddings = format_embeddings(embeddings, "embeddings")
    name = fam.similarity.name
    if type(fam.similarity) not in (CosineSimilarity, DotSimilarity, EuclideanSimilarity):
        raise ValueError(
            "build_index makes inner-product indexes for 'cosine' and 'dot' and L2 indexes for "
            f"'euclidean'; fam compares with {fam.similarity!r}"
        )
    check_count(train_size, "train_size", required=False)
    metric = faiss.METRIC_L2 if name == "euclidean" else faiss.METRIC_INNER_PRODUCT
    vectors = normalize(embeddings) if name == "cosine" else embeddings
    data = float32_rows(vectors)
    index = faiss.index_factory(data.shape[1], factory, metric)
    if not index.is_trained:
        sample = data
        if train_size is not None and train_size < len(data):
            chosen = np.random.default_rng(seed).choice(len(data), train_size, replace=False)
            sample = data[np.sort(chosen)]
        index.train(sample)
    index.add(data)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    return index


def metric_of(index: Any) -> int:
    for method in ("search", "metric_type"):
        if not hasattr(index, method):
            raise TypeError(
                "index must be a FAISS index or an object with its interface (search, "
                f"reconstruct_batch, metric_type); {type(index).__name__} has no {method}"
            )
    metric = index.metric_type
    if metric not in METRIC_NAMES:
        raise ValueError(
            f"index.metric_type is {metric!r}; explain_search supports inner product "
            f"({METRIC_INNER_PRODUCT}, faiss.METRIC_INNER_PRODUCT) and L2 ({METRIC_L2}, "
            "faiss.METRIC_L2), the metrics whose scores FAM decomposes"
        )
    return int(metric)


def float32_rows(vectors: Tensor) -> np.ndarray:
    return np.ascontiguousarray(vectors.detach().to("cpu", torch.float32).numpy())


def search_result(raw_scores: Any, raw_ids: Any, n: int, k: int) -> tuple[Tensor, Tensor]:
    scores, ids = torch.as_tensor(np.asarray(raw_scores)), torch.as_tensor(np.asarray(raw_ids))
    if scores.shape != (n, k) or ids.shape != (n, k):
        raise ValueError(
            f"index.search returned scores of shape {tuple(scores.shape)} and ids of shape "
            f"{tuple(ids.shape)}; expected ({n}, {k}) each"
        )
    missing = (ids < 0).any(dim=1).nonzero().flatten()
    if missing.numel():
        found = int((ids[missing[0]] >= 0).sum())
        raise ValueError(
            f"the index found only {found} of k={k} hits for query {int(missing[0])} (id -1): "
            "lower k, or search more of the index (e.g. raise index.nprobe of an IVF index)"
        )
    return scores, ids.long()


def reconstruct(index: Any, ids: Tensor, dim: int) -> Tensor:
    keys = ids.numpy().astype(np.int64)
    try:
        if hasattr(index, "reconstruct_batch"):
            vectors = index.reconstruct_batch(keys)
        elif hasattr(index, "reconstruct"):
            vectors = np.stack([np.asarray(index.reconstruct(int(key))) for key in keys])
        elif hasattr(index, "reconstruct_n"):
            vectors = np.concatenate([np.asarray(index.reconstruct_n(int(k), 1)) for k in keys])
        else:
            raise TypeError(
                f"index ({type(index).__name__}) cannot return its vectors: explain_search "
                "needs reconstruct_batch, reconstruct or reconstruct_n"
            )
    except RuntimeError as error:
        hint = _reconstruction_hint(index, str(error))
        if hint is None:
            raise
        raise ValueError(hint) from error
    vectors = torch.as_tensor(np.asarray(vectors))
    if vectors.shape != (len(keys), dim) or not vectors.is_floating_point():
        raise ValueError(
            f"the index reconstructed {tuple(vectors.shape)} {vectors.dtype} vectors for "
            f"{len(keys)} ids; expected ({len(keys)}, {dim}) floating point"
        )
    return vectors


def _reconstruction_hint(index: Any, message: str) -> str | None:
    name = type(index).__name__
    if "direct map not initialized" in message:
        how = (
            "index.make_direct_map()"
            if hasattr(index, "make_direct_map")
            else "faiss.extract_index_ivf(index).make_direct_map()"
        )
        return (
            f"the index ({name}) cannot look its vectors up by id: an IVF index needs a direct "
            f"map for that. Enable it once after adding the vectors (8 bytes per vector): {how}"
            ", then save the index again"
        )
    if "not implemented" in message:
        instead = " (use IndexIDMap2, which can)" if name == "IndexIDMap" else ""
        return (
            f"the index ({name}) cannot reconstruct its vectors{instead}, and explain_search "
            "explains the vectors the index scored: use an index type that stores or decodes "
            "them (Flat, IVF with a direct map, PQ, SQ, HNSW over Flat)"
        )
    return None


def normalize(vectors: Tensor) -> Tensor:
    return torch.nn.functional.normalize(vectors, dim=1)


def check_count(
    value: Any, name: str, limit: int | None = None, what: str = "", required: bool = True
) -> None:
    if value is None and not required:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if limit is not None and value > int(limit):
        raise ValueError(f"{name} must be at most {what} ({int(limit)}); got {value}")


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "building a vector index needs FAISS: pip install 'captum-fam[index]' (faiss-cpu)"
        ) from error
    return faiss
