"""The chunk writer: chunks assembled from batches, written in the background, errors raised."""

from __future__ import annotations

import threading

import pytest
import torch

from captum_fam.jobs.items import Batch
from captum_fam.jobs.references import Explained
from captum_fam.jobs.store import StoreLayout
from captum_fam.jobs.writer import ChunkWriter

LAYOUT = StoreLayout(items=6, references=1, map_shape=(2, 2), chunk_size=4,
                     map_dtype="float16", labels=False, predictions=False, masks=False)  # fmt: skip


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.layout, self.fail, self.written = LAYOUT, fail, {}
        self.threads: set[str] = set()

    def write_chunk(self, chunk, data):
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise OSError("disk full")
        self.written[chunk] = data


def batch(start: int, stop: int) -> tuple[Batch, Explained]:
    n = stop - start
    values = torch.arange(start, stop, dtype=torch.float32)
    explained = Explained(values.view(n, 1, 1, 1).expand(n, 1, 2, 2), values[:, None],
                          torch.zeros(n, 1, dtype=torch.int64))  # fmt: skip
    return Batch(range(start, stop), (torch.zeros(n, 3),), None, None), explained


def test_chunks_are_assembled_and_written_in_the_background():
    store, sums = FakeStore(), {}
    writer = ChunkWriter(store, sums)
    for start, stop in ((0, 2), (2, 4), (4, 6)):
        writer.add(*batch(start, stop))
    writer.close()
    assert sorted(store.written) == [0, 1] and store.threads == {"chunk-writer"}
    assert store.written[0]["item_index"].tolist() == [0, 1, 2, 3]
    assert store.written[1]["maps"].dtype == "float16" and store.written[1]["maps"].shape == (
        2,
        1,
        2,
        2,
    )
    assert sums[0][1] == 0 + 1 + 2 + 3 and sums[1][1] == 4 + 5  # the scores' sums


def test_a_write_error_reaches_the_job():
    writer = ChunkWriter(FakeStore(fail=True), {})
    writer.add(*batch(0, 2))
    writer.add(*batch(2, 4))  # the chunk goes to the writer, which fails
    with pytest.raises(OSError, match="disk full"):
        writer.close()


def test_a_failing_job_keeps_its_own_error():
    store = FakeStore(fail=True)
    writer = ChunkWriter(store, {})
    writer.add(*batch(0, 2))
    writer.add(*batch(2, 4))
    writer.close(raise_error=False)  # the job's error propagates instead
    assert store.threads == {"chunk-writer"} and not writer.thread.is_alive()
