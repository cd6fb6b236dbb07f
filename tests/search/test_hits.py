"""explain_search: the index's hits, explained against what the index scored.

A tiny pure-torch index with FAISS's interface checks the protocol without FAISS; the FAISS
tests (flat inner product and L2, IVF with and without a direct map, PQ, id maps) run where
faiss-cpu is installed (the ``dev`` and ``index`` extras).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import TinyEmbedder
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.search import (
    METRIC_INNER_PRODUCT,
    METRIC_L2,
    SearchExplanation,
    build_index,
    explain_search,
)
from captum_fam.tasks import RetrievalExplanation, explain_retrieval

try:
    import faiss
except ImportError:  # the protocol tests run without it
    faiss = None

needs_faiss = pytest.mark.skipif(faiss is None, reason="faiss-cpu is not installed (extra 'index')")


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Tiny indexes: on a shared machine FAISS's OpenMP threads would only wait for each other."""
    if faiss is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


class TorchIndex:
    """FAISS's interface over a tensor: exact inner-product or L2 search, in plain torch."""

    def __init__(self, vectors: torch.Tensor, metric_type: int) -> None:
        self.vectors = vectors.float()
        self.metric_type = metric_type
        self.ntotal, self.d = vectors.shape

    def search(self, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous
        queries = torch.from_numpy(x)
        if self.metric_type == METRIC_INNER_PRODUCT:
            scores, ids = (queries @ self.vectors.T).topk(k, dim=1)
        else:
            distances = (queries[:, None] - self.vectors[None]).pow(2).sum(2)
            scores, ids = distances.topk(k, dim=1, largest=False)
        return scores.numpy(), ids.numpy()

    def reconstruct_batch(self, keys: np.ndarray) -> np.ndarray:
        return self.vectors[torch.from_numpy(keys)].numpy()


def make_fam(similarity="dot", embedding="layer", weighting="reference", seed=0):
    torch.manual_seed(seed)
    backbone = TinyEmbedder().eval()
    if embedding == "output":
        head = nn.Linear(6, 4, bias=False)
        with torch.no_grad():  # a head that keeps the channels' signs: maps are not all zero
            head.weight.abs_()
        model = nn.Sequential(backbone, head).eval()
        return FeatureActivationMap(model, backbone.block, similarity, weighting)
    return FeatureActivationMap(backbone, backbone.block, similarity, weighting, embedding="layer")


def rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


# Images of different contrast: embeddings (and so scores) that differ well beyond rounding.
GALLERY = rand(40, 3, 12, 12, seed=10) * 4 * rand(40, 1, 1, 1, seed=12)
QUERIES = rand(3, 3, 12, 12, seed=11) * 4 * rand(3, 1, 1, 1, seed=13)


def load(ids: torch.Tensor) -> torch.Tensor:
    return GALLERY[ids]


# ------------------------------------------------------------------------------------------
# The protocol, with a pure-torch index


@pytest.mark.parametrize("embedding", ["layer", "output"])
def test_inner_product_index_matches_explain_retrieval(embedding):
    fam = make_fam("dot", embedding)
    index = TorchIndex(fam.embed(GALLERY), METRIC_INNER_PRODUCT)
    hits = explain_search(fam, QUERIES, index, k=4, load_items=load)
    expected = explain_retrieval(fam, QUERIES, gallery=GALLERY, k=4)
    assert isinstance(hits, SearchExplanation) and isinstance(hits, RetrievalExplanation)
    assert hits.metric == "inner_product" and hits.similarity == "dot"
    assert torch.equal(hits.indices, expected.indices)
    torch.testing.assert_close(hits.scores, expected.scores)
    torch.testing.assert_close(hits.explained_scores, hits.scores)
    torch.testing.assert_close(hits.maps, expected.maps)
    torch.testing.assert_close(hits.gallery_maps, expected.gallery_maps)
    assert hits.vectors.shape == (3, 4, index.d) and hits.gap is None


@pytest.mark.parametrize("embedding", ["layer", "output"])
def test_l2_index_scores_are_squared_distances_and_maps_explain_their_negative(embedding):
    fam = make_fam("euclidean", embedding)
    index = TorchIndex(fam.embed(GALLERY), METRIC_L2)
    hits = explain_search(fam, QUERIES, index, k=4)
    expected = explain_retrieval(fam, QUERIES, gallery_embeddings=fam.embed(GALLERY), k=4)
    assert hits.metric == "l2" and hits.similarity == "euclidean"
    assert torch.equal(hits.indices, expected.indices)
    assert bool((hits.scores >= 0).all()) and bool((hits.scores.diff(dim=1) >= 0).all())
    torch.testing.assert_close(hits.explained_scores, -hits.scores)
    torch.testing.assert_close(hits.explained_scores, expected.scores)
    torch.testing.assert_close(hits.maps, expected.maps)


def test_raw_maps_add_up_to_the_index_score():
    # Reference weighting without ReLU or normalisation: the mean of the map over positions
    # is the explained score (for euclidean up to -|r|^2), i.e. the index's own number.
    raw = {"relu_attributions": False, "normalize_weights": False}
    for similarity, metric in (("dot", METRIC_INNER_PRODUCT), ("euclidean", METRIC_L2)):
        fam = make_fam(similarity)
        index = TorchIndex(fam.embed(GALLERY), metric)
        hits = explain_search(fam, QUERIES, index, k=3, **raw)
        means = hits.maps.flatten(2).mean(dim=2)
        if metric == METRIC_L2:
            means = means - hits.vectors.pow(2).sum(2)
            torch.testing.assert_close(means, -hits.scores)
        else:
            torch.testing.assert_close(means, hits.scores)


def test_items_are_loaded_in_chunks_of_batch_size():
    fam = make_fam("dot")
    index = TorchIndex(fam.embed(GALLERY), METRIC_INNER_PRODUCT)
    asked = []

    def counting_load(ids):
        assert ids.dtype == torch.int64 and ids.dim() == 1
        asked.append(ids.tolist())
        return GALLERY[ids]

    whole = explain_search(fam, QUERIES, index, k=4, load_items=load, compare=True)
    chunked = explain_search(
        fam, QUERIES, index, k=4, load_items=counting_load, compare=True, batch_size=5
    )
    assert [len(ids) for ids in asked] == [5, 5, 2]
    assert sum(asked, []) == whole.indices.flatten().tolist()
    torch.testing.assert_close(chunked.gallery_maps, whole.gallery_maps)
    torch.testing.assert_close(chunked.gap.maps, whole.gap.maps)


def test_compare_with_an_exact_index_has_no_gap():
    fam = make_fam("dot", "output")
    index = TorchIndex(fam.embed(GALLERY), METRIC_INNER_PRODUCT)
    gap = explain_search(fam, QUERIES, index, k=4, load_items=load, compare=True).gap
    assert gap is not None and gap.maps.shape == (3, 4, 6, 6)
    assert bool((gap.maps.flatten(2).std(dim=2) > 0).all())
    torch.testing.assert_close(gap.score_gap, torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(gap.vector_error, torch.zeros(3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(gap.map_correlation, torch.ones(3, 4))


def test_compare_reports_the_gap_of_a_perturbed_index():
    # An index whose stored vectors are perturbed, like a lossy code: the maps explain the
    # perturbed vectors (what the index scored), the gap says how far that is from the items.
    fam = make_fam("euclidean")
    exact = fam.embed(GALLERY)
    noisy = exact + 0.05 * rand(*exact.shape, seed=3)
    hits = explain_search(fam, QUERIES, TorchIndex(noisy, METRIC_L2), k=4, load_items=load,
                          compare=True)  # fmt: skip
    ids = hits.indices
    queries = fam.embed(QUERIES)
    torch.testing.assert_close(hits.vectors, noisy[ids])
    torch.testing.assert_close(hits.gap.scores, (queries[:, None] - exact[ids]).pow(2).sum(2))
    torch.testing.assert_close(hits.gap.score_gap, hits.scores - hits.gap.scores)
    error = (noisy[ids] - exact[ids]).norm(dim=2) / exact[ids].norm(dim=2)
    torch.testing.assert_close(hits.gap.vector_error, error)
    for j in range(4):
        torch.testing.assert_close(
            hits.maps[:, j : j + 1], fam.attribute(QUERIES, reference_embeddings=noisy[ids[:, j]])
        )
        torch.testing.assert_close(
            hits.gap.maps[:, j : j + 1],
            fam.attribute(QUERIES, reference_embeddings=exact[ids[:, j]]),
        )
    correlation = hits.gap.map_correlation
    assert bool(((correlation > 0.5) & (correlation <= 1 + 1e-6)).all()), correlation


def test_cosine_model_over_unit_vectors_searches_with_the_normalised_query():
    fam = make_fam("cosine", "output")
    gallery = torch.nn.functional.normalize(fam.embed(GALLERY), dim=1)
    index = TorchIndex(gallery, METRIC_INNER_PRODUCT)
    hits = explain_search(fam, QUERIES, index, k=4)
    expected = explain_retrieval(fam, QUERIES, gallery_embeddings=gallery, k=4)
    assert hits.similarity == "cosine"
    # The same top-k cosines (near-ties may swap places between the two computations) ...
    torch.testing.assert_close(hits.scores, expected.scores)
    # ... and each hit's map is the cosine map against its stored vector.
    for j in range(4):
        reference = gallery[hits.indices[:, j]]
        torch.testing.assert_close(
            hits.scores[:, j], fam.similarity_scores(QUERIES, reference_embeddings=reference)
        )
        torch.testing.assert_close(
            hits.maps[:, j : j + 1], fam.attribute(QUERIES, reference_embeddings=reference)
        )


def test_cosine_model_over_vectors_of_any_length_is_refused_or_declared():
    fam = make_fam("cosine")
    index = TorchIndex(fam.embed(GALLERY), METRIC_INNER_PRODUCT)
    with pytest.raises(ValueError, match=r"not unit length.*similarity='dot'.*normalized=True"):
        explain_search(fam, QUERIES, index, k=2)
    with pytest.raises(ValueError, match=r"normalized=False.*similarity='dot'"):
        explain_search(fam, QUERIES, index, k=2, normalized=False)
    # Declared: the maps explain the index's number q . r / |q| (the cosine times |r|).
    hits = explain_search(fam, QUERIES, index, k=2, normalized=True)
    queries = fam.embed(QUERIES)
    expected = (queries[:, None] * hits.vectors).sum(2) / queries.norm(dim=1, keepdim=True)
    torch.testing.assert_close(hits.scores, expected)
    torch.testing.assert_close(hits.explained_scores, expected)


def test_scores_the_index_does_not_compute_from_its_vectors_warn_at_the_caller():
    class Shifted(TorchIndex):
        def search(self, x, k):
            scores, ids = super().search(x, k)
            return scores + 1.0, ids

    fam = make_fam("dot")
    with pytest.warns(UserWarning, match="differ from explained_scores") as record:
        hits = explain_search(fam, QUERIES, Shifted(fam.embed(GALLERY), 0), k=2)
    assert record[0].filename == __file__
    torch.testing.assert_close(hits.scores, hits.explained_scores + 1.0)


def test_duck_index_without_reconstruct_batch_uses_reconstruct():
    class OneByOne(TorchIndex):
        reconstruct_batch = None  # type: ignore[assignment]

        def reconstruct(self, key: int) -> np.ndarray:
            return self.vectors[key].numpy()

    del OneByOne.reconstruct_batch
    fam = make_fam("dot")
    vectors = fam.embed(GALLERY)
    hits = explain_search(fam, QUERIES, OneByOne(vectors, 0), k=3)
    torch.testing.assert_close(hits.vectors, vectors[hits.indices])


# ------------------------------------------------------------------------------------------
# Errors


def test_metric_mismatch_says_which_similarity_to_use():
    embeddings = make_fam().embed(GALLERY)
    for similarity in ("cosine", "dot"):
        with pytest.raises(ValueError, match=r"squared L2.*similarity='euclidean'"):
            explain_search(make_fam(similarity), QUERIES, TorchIndex(embeddings, METRIC_L2))
    with pytest.raises(ValueError, match=r"inner products.*similarity='dot'.*'cosine'"):
        explain_search(make_fam("euclidean"), QUERIES, TorchIndex(embeddings, 0))
    custom = make_fam(lambda q, r: (q * r).sum(1))
    with pytest.raises(ValueError, match="similarity='dot'"):
        explain_search(custom, QUERIES, TorchIndex(embeddings, 0))
    index = TorchIndex(embeddings, 0)
    index.metric_type = 2  # faiss.METRIC_L1
    with pytest.raises(ValueError, match=r"metric_type is 2.*inner product.*L2"):
        explain_search(make_fam(), QUERIES, index)


def test_dimension_mismatch_names_the_space():
    fam = make_fam("dot", "output")  # output: 4 dims; the layer has 6
    index = TorchIndex(make_fam("dot", "layer").embed(GALLERY), 0)
    with pytest.raises(ValueError, match=r"6-dimensional.*gives 4.*embedding='output'"):
        explain_search(fam, QUERIES, index)


def test_bad_arguments():
    fam = make_fam()
    index = TorchIndex(fam.embed(GALLERY), 0)
    for k in (0, 41, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            explain_search(fam, QUERIES, index, k=k)
    with pytest.raises(ValueError, match="batch_size must be"):
        explain_search(fam, QUERIES, index, batch_size=0)
    with pytest.raises(ValueError, match="compare=True.*load_items"):
        explain_search(fam, QUERIES, index, compare=True)
    with pytest.raises(TypeError, match="load_items must be a callable"):
        explain_search(fam, QUERIES, index, load_items=GALLERY)
    with pytest.raises(ValueError, match="normalized applies to a cosine model"):
        explain_search(fam, QUERIES, index, normalized=True)
    with pytest.raises(TypeError, match="has no search"):
        explain_search(fam, QUERIES, object())
    with pytest.raises(ValueError, match="returned 1 items for 2 ids"):
        explain_search(fam, QUERIES[:1], index, k=2, load_items=lambda ids: GALLERY[:1])
    with pytest.raises(TypeError, match="queries must be"):
        explain_search(fam, "query.jpg", index)


def test_missing_hits_are_an_error():
    class Sparse(TorchIndex):
        def search(self, x, k):
            scores, ids = super().search(x, k)
            ids[1, -1] = -1
            return scores, ids

    fam = make_fam()
    with pytest.raises(ValueError, match=r"only 2 of k=3 hits for query 1.*nprobe"):
        explain_search(fam, QUERIES, Sparse(fam.embed(GALLERY), 0), k=3)


# ------------------------------------------------------------------------------------------
# FAISS


def _ivf(fam, vectors, spec, direct_map, metric):
    index = faiss.index_factory(vectors.shape[1], spec, metric)
    data = vectors.numpy()
    index.train(data)
    index.add(data)
    ivf = faiss.extract_index_ivf(index)
    ivf.nprobe = ivf.nlist  # every list: the hits are the exact top-k
    if direct_map:
        ivf.make_direct_map()
    return index


@needs_faiss
@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_faiss_flat_index_matches_explain_retrieval(similarity):
    fam = make_fam(similarity, "output")
    embeddings = fam.embed(GALLERY)
    index = build_index(fam, embeddings)
    expected_metric = faiss.METRIC_L2 if similarity == "euclidean" else faiss.METRIC_INNER_PRODUCT
    assert index.metric_type == expected_metric and index.ntotal == 40
    hits = explain_search(fam, QUERIES, index, k=5, load_items=load)
    expected = explain_retrieval(fam, QUERIES, gallery=GALLERY, k=5)
    sign = -1 if similarity == "euclidean" else 1
    # The same top-k scores (a cosine near-tie may swap two hits between the computations) ...
    torch.testing.assert_close(sign * hits.scores, expected.scores)
    # ... and each hit explained on both sides, as fam.attribute explains it.
    for j in range(5):
        items = GALLERY[hits.indices[:, j]]
        torch.testing.assert_close(
            sign * hits.scores[:, j], fam.similarity_scores(QUERIES, reference=items)
        )
        torch.testing.assert_close(hits.maps[:, j : j + 1], fam.attribute(QUERIES, reference=items))
        torch.testing.assert_close(
            hits.gallery_maps[:, j : j + 1], fam.attribute(items, reference=QUERIES)
        )


@needs_faiss
def test_faiss_ivf_without_direct_map_says_how_to_enable_it():
    fam = make_fam("euclidean")
    vectors = fam.embed(rand(200, 3, 12, 12, seed=4))
    index = _ivf(fam, vectors, "IVF4,Flat", False, faiss.METRIC_L2)
    with pytest.raises(ValueError, match=r"direct map.*index\.make_direct_map\(\)"):
        explain_search(fam, QUERIES, index, k=3)
    ivf = faiss.index_factory(vectors.shape[1], "IVF4,Flat", faiss.METRIC_L2)
    ivf.train(vectors.numpy())
    wrapped = faiss.IndexIDMap2(ivf)  # an IVF inside a wrapper: the hint names the way in
    wrapped.add_with_ids(vectors.numpy(), np.arange(200, dtype=np.int64))
    with pytest.raises(ValueError, match=r"faiss\.extract_index_ivf\(index\)\.make_direct_map"):
        explain_search(fam, QUERIES, wrapped, k=3)


@needs_faiss
def test_faiss_ivf_with_direct_map_explains_like_flat():
    fam = make_fam("euclidean")
    vectors = fam.embed(rand(200, 3, 12, 12, seed=4))
    ivf = explain_search(fam, QUERIES, _ivf(fam, vectors, "IVF4,Flat", True, faiss.METRIC_L2), 3)
    flat = explain_search(fam, QUERIES, build_index(fam, vectors), k=3)
    assert torch.equal(ivf.indices, flat.indices)
    torch.testing.assert_close(ivf.scores, flat.scores)
    torch.testing.assert_close(ivf.maps, flat.maps)


@needs_faiss
@pytest.mark.parametrize("metric", ["inner_product", "l2"])
def test_faiss_pq_is_explained_against_its_decoded_vectors(metric):
    similarity = "cosine" if metric == "inner_product" else "euclidean"
    fam = make_fam(similarity)
    gallery = rand(300, 3, 12, 12, seed=5)
    index = build_index(fam, fam.embed(gallery), "IVF2,PQ3x4")
    faiss.extract_index_ivf(index).nprobe = 2
    if metric == "inner_product":  # decoded unit vectors are only close to unit length
        with pytest.raises(ValueError, match="normalized=True"):
            explain_search(fam, QUERIES, index, k=4)
    declared = {"normalized": True} if metric == "inner_product" else {}
    hits = explain_search(
        fam, QUERIES, index, k=4, load_items=lambda ids: gallery[ids], compare=True, **declared
    )
    sign = -1 if metric == "l2" else 1
    # The index's ADC scores are the scores of the decoded vectors: the maps explain them.
    torch.testing.assert_close(hits.explained_scores, sign * hits.scores, atol=1e-5, rtol=1e-4)
    decoded = torch.from_numpy(index.reconstruct_batch(hits.indices.flatten().numpy()))
    torch.testing.assert_close(hits.vectors, decoded.reshape(3, 4, -1))
    raw = explain_search(fam, QUERIES, index, k=4, relu_attributions=False,
                         normalize_weights=False, **declared)  # fmt: skip
    means = raw.maps.flatten(2).mean(dim=2)
    if metric == "l2":
        means = means - raw.vectors.pow(2).sum(2)
    torch.testing.assert_close(means, sign * raw.scores, atol=1e-5, rtol=1e-4)
    # Lossy codes: the decoded vectors differ from the items, and the gap says by how much.
    gap = hits.gap
    assert bool((gap.vector_error > 1e-3).any()), gap.vector_error
    torch.testing.assert_close(gap.score_gap, hits.scores - gap.scores)
    items = fam.embed(gallery[hits.indices.flatten()]).reshape(3, 4, -1)
    if metric == "inner_product":
        items = torch.nn.functional.normalize(items, dim=2)
    torch.testing.assert_close(gap.vector_error, (hits.vectors - items).norm(dim=2) /
                               items.norm(dim=2))  # fmt: skip
    assert bool((gap.map_correlation.abs() <= 1 + 1e-6).all())


@needs_faiss
def test_faiss_id_map_returns_and_loads_the_users_ids():
    fam = make_fam("dot")
    vectors = fam.embed(GALLERY).numpy()
    ids = np.arange(40, dtype=np.int64) * 7 + 1000
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    by_id = {int(i): row for row, i in enumerate(ids)}
    seen = []

    def load_by_id(keys):
        seen.extend(keys.tolist())
        return GALLERY[[by_id[int(key)] for key in keys]]

    hits = explain_search(fam, QUERIES, index, k=3, load_items=load_by_id)
    expected = explain_retrieval(fam, QUERIES, gallery=GALLERY, k=3)
    torch.testing.assert_close(hits.indices, torch.from_numpy(ids)[expected.indices])
    assert seen == hits.indices.flatten().tolist()
    torch.testing.assert_close(hits.maps, expected.maps)
    torch.testing.assert_close(hits.gallery_maps, expected.gallery_maps)
    plain = faiss.IndexIDMap(faiss.IndexFlatIP(vectors.shape[1]))
    plain.add_with_ids(vectors, ids)
    with pytest.raises(ValueError, match="use IndexIDMap2"):
        explain_search(fam, QUERIES, plain, k=3)
