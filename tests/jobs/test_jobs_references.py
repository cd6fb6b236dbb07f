"""References of a job: fixed rows, prototypes by label, and the sharded gallery search."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyEmbedder
from hypothesis import given
from hypothesis import strategies as st

from captum_fam import FeatureActivationMap
from captum_fam.jobs import references as module
from captum_fam.jobs.distributed import DistributedContext
from captum_fam.jobs.references import (
    FixedReferences,
    GalleryReferences,
    GalleryShard,
    PrototypeReferences,
    shard_rows,
)


@given(size=st.integers(0, 200), world_size=st.integers(1, 9))
def test_shard_rows_tile_the_gallery(size, world_size):
    parts = [shard_rows(size, r, world_size) for r in range(world_size)]
    assert [i for part in parts for i in part] == list(range(size))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_local_top_k_breaks_ties_by_lower_index_across_blocks(monkeypatch):
    fam = FeatureActivationMap(TinyEmbedder(), torch.nn.Identity(), similarity="dot")
    # Scores 1, 3, 3, 2, 3, 0, 3 against the query 1: ties at 3 on rows 1, 2, 4 and 6.
    gallery = torch.tensor([1.0, 3, 3, 2, 3, 0, 3])[:, None]
    queries = torch.ones(2, 1)
    for pairs in (1, 2, 3, 100):  # the gallery scored in blocks of 1, 1, 2... rows
        monkeypatch.setattr(module, "_PAIRS_PER_BLOCK", pairs)
        search = GalleryReferences(GalleryShard(gallery, 10, 17), 3, FakeShard())
        values, indices, rows = search._local_top_k(fam.engine, gallery, queries, capacity=4)
        assert indices[:2].tolist() == [[11, 12, 14]] * 2  # shard start 10 added
        assert values[:2].tolist() == [[3.0, 3.0, 3.0]] * 2 and rows[:2, :, 0].eq(3).all()
        assert (indices[2:] == -1).all() and values[2:].isneginf().all()


class FakeShard(DistributedContext):
    """A rank whose shard is rows [10, 17) of a gallery of 17 rows, the others' never seen."""

    def all_gather_object(self, value):
        return [(0, 10, 17, "other"), value]


def test_gallery_arguments_are_checked():
    single = DistributedContext()
    with pytest.raises(ValueError, match="k must be an int between 1 and the gallery size 4"):
        GalleryReferences(torch.rand(4, 3), 5, single)
    with pytest.raises(ValueError, match="must tile"):
        GalleryReferences(GalleryShard(torch.rand(4, 3), 2, 6), 1, single)
    with pytest.raises(ValueError, match="cover 4 rows of size=6"):
        GalleryReferences(GalleryShard(torch.rand(4, 3), 0, 6), 1, single)
    search = GalleryReferences(torch.rand(9, 3), 2, single)
    assert search.rows.shape == (9, 3) and search.count == 2
    assert search.fingerprint(single)["gallery_size"] == 9


def test_fixed_and_prototype_arguments_are_checked():
    with pytest.raises(ValueError, match="1 row .shared by every item. or one per item .10."):
        FixedReferences(torch.rand(3, 4), items=10)
    with pytest.raises(ValueError, match="classes must be a tensor of 3 labels"):
        PrototypeReferences(torch.rand(3, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="must not repeat"):
        PrototypeReferences(torch.rand(3, 4), torch.tensor([1, 2, 1]))
    with pytest.raises(TypeError, match="integer labels"):
        PrototypeReferences(torch.rand(3, 4), torch.tensor([1.0, 2.0, 3.0]))
    assert FixedReferences(torch.rand(4), items=10).rows.shape == (1, 4)
