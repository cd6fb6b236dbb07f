"""Sharding: every item exactly once over all ranks, no padding, the same batches on any world."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captum_fam.jobs.sharding import batches_of, chunk_count, chunk_range, rank_chunks


@given(
    items=st.integers(1, 500),
    chunk_size=st.integers(1, 64),
    batch_size=st.integers(1, 64),
    world_size=st.integers(1, 9),
)
def test_every_item_exactly_once_in_the_same_batches(items, chunk_size, batch_size, world_size):
    seen: list[int] = []
    batches: list[range] = []
    for rank in range(world_size):
        for chunk in rank_chunks(items, chunk_size, rank, world_size):
            for batch in batches_of(chunk_range(chunk, items, chunk_size), batch_size):
                assert 1 <= len(batch) <= batch_size
                seen.extend(batch)
                batches.append(batch)
    assert sorted(seen) == list(range(items))  # no item lost, none repeated (no padding)
    single = [
        batch
        for chunk in rank_chunks(items, chunk_size, 0, 1)
        for batch in batches_of(chunk_range(chunk, items, chunk_size), batch_size)
    ]
    assert sorted(batches, key=lambda b: b.start) == single  # the same forwards on any world


@given(items=st.integers(1, 300), chunk_size=st.integers(1, 40), world_size=st.integers(1, 6))
def test_ranks_get_chunks_round_robin(items, chunk_size, world_size):
    shares = [rank_chunks(items, chunk_size, r, world_size) for r in range(world_size)]
    assert sorted(c for share in shares for c in share) == list(
        range(chunk_count(items, chunk_size))
    )
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [rank_chunks(items, chunk_size, r, world_size) for r in range(world_size)]


def test_chunks_never_straddle():
    assert chunk_count(10, 4) == 3
    assert list(chunk_range(2, 10, 4)) == [8, 9]
    assert batches_of(range(8, 20), 5) == [range(8, 13), range(13, 18), range(18, 20)]
    assert rank_chunks(10, 3, 1, 2) == [1, 3]


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0)])
def test_bad_rank(rank, world_size):
    with pytest.raises(ValueError, match="rank must be in"):
        rank_chunks(10, 3, rank, world_size)
