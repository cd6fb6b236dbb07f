"""Chunks assembled from their batches and written by a background thread.

A chunk's arrays (and its completion record, last) are written while the next batches are
computed, so the store costs the job almost no time. The queue holds at most two chunks, which
bounds the memory; an error of the writer is raised in the job at the next batch, and
:meth:`ChunkWriter.close` writes every chunk already handed over before it returns, also when
the job fails, so that no finished chunk is lost.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from captum_fam.jobs.items import Batch
from captum_fam.jobs.references import Explained
from captum_fam.jobs.sharding import chunk_range
from captum_fam.jobs.store import JobStore, StoreLayout
from captum_fam.jobs.summaries import chunk_sums

__all__ = ["ChunkWriter"]

_DONE = None


class ChunkWriter:
    """Collects a chunk's batches; once the chunk is whole, queues it for writing.

    Args:
        store (JobStore): The open store.
        sums (dict): Filled with ``chunk -> chunk_sums(...)`` of every chunk written.
    """

    def __init__(self, store: JobStore, sums: dict[int, np.ndarray]) -> None:
        self.store, self.layout, self.sums = store, store.layout, sums
        self.parts: list[dict[str, np.ndarray]] = []
        self.error: BaseException | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._write, name="chunk-writer", daemon=True)
        self.thread.start()

    def add(self, batch: Batch, explained: Explained) -> None:
        """One batch's results; the batch that ends a chunk hands the chunk to the writer."""
        self._raise_error()
        self.parts.append(_arrays(batch, explained, self.layout))
        size = self.layout.chunk_size
        chunk = batch.indices.start // size
        if batch.indices.stop == chunk_range(chunk, self.layout.items, size).stop:
            data = {name: np.concatenate([p[name] for p in self.parts]) for name in self.parts[0]}
            self.parts = []
            self.queue.put((chunk, data))

    def close(self, raise_error: bool = True) -> None:
        """Write what was handed over, stop the thread, raise the writer's error if any.

        ``raise_error=False`` when the job is failing already: its own error is the one to see.
        """
        self.queue.put(_DONE)
        self.thread.join()
        if raise_error:
            self._raise_error()

    def _write(self) -> None:
        while (job := self.queue.get()) is not _DONE:
            if self.error is not None:
                continue  # drain: the job stops at its next batch
            chunk, data = job
            try:
                self.store.write_chunk(chunk, data)
                self.sums[chunk] = chunk_sums(data, self.layout)
            except BaseException as error:  # noqa: BLE001 - handed to the job's thread
                self.error = error

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error


def _arrays(batch: Batch, explained: Explained, layout: StoreLayout) -> dict[str, np.ndarray]:
    """One batch's rows of every array, in the store's dtypes."""
    part = {
        "item_index": np.arange(batch.indices.start, batch.indices.stop, dtype=np.int64),
        "maps": explained.maps.detach().cpu().numpy().astype(layout.map_dtype),
        "scores": explained.scores.detach().cpu().numpy().astype(np.float32),
        "indices": explained.indices.cpu().numpy().astype(np.int64),
    }
    if layout.labels:
        assert batch.labels is not None
        part["labels"] = batch.labels.numpy()
    if layout.predictions:
        assert explained.predictions is not None
        part["predictions"] = explained.predictions.numpy().astype(np.int64)
    if layout.masks:
        from captum_fam.metrics import energy_pointing_game, pointing_game

        assert batch.masks is not None
        first = explained.maps[:, 0:1].detach().cpu()
        part["pointing"] = pointing_game(first, batch.masks).numpy().astype(np.int8)
        part["energy"] = energy_pointing_game(first, batch.masks).numpy().astype(np.float32)
    return part
