"""Vector indexes: building one with FAM's metric, reading results and vectors back."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from helpers import TinyEmbedder

from captum_fam import FeatureActivationMap
from captum_fam.search import build_index, explain_search
from captum_fam.search.indexes import METRIC_L2, metric_of, reconstruct, search_result

try:
    import faiss
except ImportError:
    faiss = None

needs_faiss = pytest.mark.skipif(faiss is None, reason="faiss-cpu is not installed (extra 'index')")


def make_fam(similarity="dot"):
    torch.manual_seed(0)
    backbone = TinyEmbedder().eval()
    return FeatureActivationMap(backbone, backbone.block, similarity, embedding="layer")


def rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


GALLERY = rand(40, 3, 12, 12, seed=10) * 4 * rand(40, 1, 1, 1, seed=12)
QUERIES = rand(3, 3, 12, 12, seed=11) * 4 * rand(3, 1, 1, 1, seed=13)


class Reconstructing:
    """Only FAISS's single-vector reconstruct: read back one id at a time."""

    metric_type = METRIC_L2

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, queries, k):
        raise NotImplementedError

    def reconstruct(self, key: int) -> np.ndarray:
        return self.vectors[key]


def test_search_results_and_reconstruction():
    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    index = Reconstructing(vectors)
    assert metric_of(index) == METRIC_L2
    rows = reconstruct(index, torch.tensor([2, 0]), 3)
    torch.testing.assert_close(rows, torch.from_numpy(vectors[[2, 0]]))
    with pytest.raises(ValueError, match=r"expected \(2, 4\) floating point"):
        reconstruct(index, torch.tensor([2, 0]), 4)
    scores, ids = search_result(np.ones((1, 2)), np.array([[3, 1]]), 1, 2)
    assert ids.dtype == torch.long and ids.tolist() == [[3, 1]]
    with pytest.raises(ValueError, match="found only 1 of k=2 hits"):
        search_result(np.ones((1, 2)), np.array([[3, -1]]), 1, 2)
    with pytest.raises(TypeError, match="has no search"):
        metric_of(object())


@needs_faiss
def test_build_index_checks_and_needs_faiss(monkeypatch):
    fam = make_fam("dot")
    embeddings = fam.embed(GALLERY)
    with pytest.raises(ValueError, match="build_index makes inner-product"):
        build_index(make_fam(lambda q, r: (q * r).sum(1)), embeddings)
    with pytest.raises(ValueError, match="train_size must be"):
        build_index(fam, embeddings, "IVF2,Flat", train_size=0)
    trained = build_index(fam, embeddings, "IVF2,Flat", train_size=20)
    assert trained.ntotal == 40 and trained.is_trained
    hits = explain_search(fam, QUERIES, trained, k=2)  # direct map made by build_index
    assert hits.vectors.shape == (3, 2, 6)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r"captum-fam\[index\]"):
        build_index(fam, embeddings)
