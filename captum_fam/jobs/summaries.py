"""Scalar summaries of a job, reduced over ranks with ``all_reduce``, exactly.

Each chunk contributes one row of sums (items, scores, pointing hits, energy shares, correct
predictions, the first map of each item), computed from the chunk's data as stored, whether this
run computed the chunk or found it complete. The rows of all chunks form a ``(chunks, P)``
float64 table in which each rank fills only its own chunks; an ``all_reduce`` sum then adds one
rank's value to zeros, which is exact, and rank 0 adds the rows in chunk order: the summaries
are bit for bit the same on any number of processes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from captum_fam.jobs.distributed import DistributedContext
from captum_fam.jobs.store import StoreLayout

__all__ = ["chunk_sums", "reduce_summary"]

_ITEMS, _SCORE, _POINTING, _ENERGY, _CORRECT, _MAP = range(6)


def chunk_sums(data: dict[str, np.ndarray], layout: StoreLayout) -> np.ndarray:
    """One chunk's row of the summary table, from its stored arrays."""
    row = np.zeros(_MAP + math.prod(layout.map_shape), dtype=np.float64)
    row[_ITEMS] = len(data["item_index"])
    row[_SCORE] = data["scores"][:, 0].astype(np.float64).sum()
    if layout.masks:
        row[_POINTING] = data["pointing"].astype(np.float64).sum()
        row[_ENERGY] = data["energy"].astype(np.float64).sum()
    if layout.predictions:
        row[_CORRECT] = float((data["predictions"] == data["labels"]).sum())
    row[_MAP:] = data["maps"][:, 0].astype(np.float64).reshape(len(data["item_index"]), -1).sum(0)
    return row


def reduce_summary(
    rows: dict[int, np.ndarray], layout: StoreLayout, context: DistributedContext
) -> dict[str, Any]:
    """The job's summary, the same on every rank; every rank must call it.

    Args:
        rows: This rank's chunks: ``chunk -> chunk_sums(...)``.

    Raises:
        RuntimeError: When some chunk has no row on any rank (a chunk was never completed).
    """
    width = _MAP + math.prod(layout.map_shape)
    table = torch.zeros(layout.chunks, width, dtype=torch.float64)
    for chunk, row in rows.items():
        table[chunk] = torch.from_numpy(row)
    table = context.all_reduce_sum(table)
    missing = (table[:, _ITEMS] == 0).nonzero().flatten().tolist()
    if missing:
        raise RuntimeError(f"chunks {missing[:10]} were not completed by any rank")
    total = table.sum(dim=0)
    items = float(total[_ITEMS])
    if items != layout.items:
        raise RuntimeError(f"the chunks hold {items:.0f} items; the dataset has {layout.items}")
    summary: dict[str, Any] = {
        "items": layout.items,
        "mean_score": float(total[_SCORE]) / items,
    }
    if layout.masks:
        summary["pointing_rate"] = float(total[_POINTING]) / items
        summary["energy_rate"] = float(total[_ENERGY]) / items
    if layout.predictions:
        summary["accuracy"] = float(total[_CORRECT]) / items
    mean_map = (total[_MAP:] / items).reshape(layout.map_shape)
    summary["mean_map"] = mean_map.tolist()
    return summary
