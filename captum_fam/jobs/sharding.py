"""Which items a rank explains: chunks of the store, dealt out by explicit index.

The unit of work is a chunk of the output store (``chunk_size`` consecutive items), so that no
two processes ever write the same chunk object. Chunk ``c`` belongs to rank ``c % world_size``:
every item is explained exactly once over all ranks, the assignment depends on nothing but the
three numbers, and there is no padding (``DistributedSampler`` repeats items to even the ranks
out; here the last rank may simply have one chunk less). Within a chunk the batches are cut the
same way whichever rank runs it, so a run on N processes sees the very batches of a run on one.
"""

from __future__ import annotations

__all__ = ["batches_of", "chunk_count", "chunk_range", "rank_chunks"]


def chunk_count(items: int, chunk_size: int) -> int:
    """Chunks covering ``items`` items (the last one may be shorter)."""
    return -(-items // chunk_size)


def chunk_range(chunk: int, items: int, chunk_size: int) -> range:
    """The item indices of chunk ``chunk``."""
    start = chunk * chunk_size
    return range(start, min(start + chunk_size, items))


def rank_chunks(items: int, chunk_size: int, rank: int, world_size: int) -> list[int]:
    """The chunks rank ``rank`` explains: ``rank, rank + world_size, ...``.

    Args:
        items (int): Items in the dataset.
        chunk_size (int): Items per chunk of the store.
        rank (int): This process, ``0 <= rank < world_size``.
        world_size (int): Processes in the job.

    Returns:
        *list[int]* chunk indices, ascending.

    Examples::

        >>> rank_chunks(items=10, chunk_size=3, rank=1, world_size=2)
        [1, 3]
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}); got {rank}")
    return list(range(rank, chunk_count(items, chunk_size), world_size))


def batches_of(chunk: range, batch_size: int) -> list[range]:
    """The batches of one chunk: ``batch_size`` items each, the last one shorter."""
    return [
        range(start, min(start + batch_size, chunk.stop))
        for start in range(chunk.start, chunk.stop, batch_size)
    ]
