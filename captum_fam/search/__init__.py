"""Explaining vector-search hits: a FAISS index (or any object like one) as the gallery.

Retrieval systems keep their gallery in a vector index. FAM needs only the retrieved vectors to
explain the query side, and the index stores them: :func:`explain_search` embeds the queries,
runs ``index.search``, fetches each hit's vector with the index's own reconstruction and
explains the score the index computed from it. The index's metric decides the similarity:

- an inner-product index is explained with ``similarity="dot"``: the map explains ``q . r``,
  the index's score;
- an inner-product index over unit-length vectors with ``similarity="cosine"``: the query is
  normalised before the search, and the map explains ``q . r / |q|``, the index's score, which
  is ``cos(q, r)`` for unit-length ``r``;
- an L2 index with ``similarity="euclidean"``: the index returns squared distances
  ``|q - r|^2``, and the map explains FAM's score ``-|q - r|^2``, minus the index's number.

``r`` is the vector the index returns for the hit (``reconstruct_batch``), which is what it
scored: for lossy codes (PQ, SQ) the decoded vector, not the item's embedding.
``compare=True`` re-embeds the retrieved items and reports the gap (:class:`SearchGap`).

FAISS is an optional dependency (``pip install "captum-fam[index]"``), imported only by
:func:`build_index`; :func:`explain_search` works with any object that has FAISS's interface
(:class:`VectorIndex`).

The package holds :mod:`.indexes` (the index interface, building, searching, reconstruction)
and :mod:`.hits` (the explanation of the hits).
"""

from captum_fam.search.hits import SearchExplanation, SearchGap, explain_search
from captum_fam.search.indexes import METRIC_INNER_PRODUCT, METRIC_L2, VectorIndex, build_index

__all__ = [
    "METRIC_INNER_PRODUCT",
    "METRIC_L2",
    "SearchExplanation",
    "SearchGap",
    "VectorIndex",
    "build_index",
    "explain_search",
]
