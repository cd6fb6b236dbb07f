"""Summaries: per-chunk sums reduced over ranks into the job's scalar summaries."""

from __future__ import annotations

import numpy as np
import pytest

from captum_fam.jobs.distributed import DistributedContext
from captum_fam.jobs.store import StoreLayout
from captum_fam.jobs.summaries import chunk_sums, reduce_summary

LAYOUT = StoreLayout(items=5, references=2, map_shape=(1, 2), chunk_size=3,
                     map_dtype="float32", labels=True, predictions=True, masks=True)  # fmt: skip


def data(first: int, stop: int) -> dict[str, np.ndarray]:
    items = np.arange(first, stop)
    maps = np.stack([items, -items], axis=1).astype(np.float32)[:, :, None, None]
    return {
        "item_index": items,
        "maps": np.concatenate([maps, maps * 2], axis=3),  # (n, 2, 1, 2)
        "scores": np.stack([items / 10, items], axis=1).astype(np.float32),
        "labels": items % 2,
        "predictions": np.zeros(len(items), dtype=np.int64),
        "pointing": (items % 3 == 0).astype(np.int8),
        "energy": np.full(len(items), 0.5, dtype=np.float32),
    }


def test_summary_of_the_first_map_and_score():
    rows = {0: chunk_sums(data(0, 3), LAYOUT), 1: chunk_sums(data(3, 5), LAYOUT)}
    summary = reduce_summary(rows, LAYOUT, DistributedContext())
    items = np.arange(5)
    assert summary["items"] == 5
    assert summary["mean_score"] == pytest.approx((items / 10).mean())
    assert summary["pointing_rate"] == pytest.approx(2 / 5)  # items 0 and 3
    assert summary["energy_rate"] == pytest.approx(0.5)
    assert summary["accuracy"] == pytest.approx(3 / 5)  # label 0: items 0, 2, 4
    assert np.allclose(summary["mean_map"], [[items.mean(), 2 * items.mean()]])


def test_a_chunk_no_rank_completed_is_an_error():
    with pytest.raises(RuntimeError, match=r"chunks \[1\] were not completed"):
        reduce_summary({0: chunk_sums(data(0, 3), LAYOUT)}, LAYOUT, DistributedContext())
