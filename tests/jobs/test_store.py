"""The job store: creation, chunk records that only a complete chunk passes, and refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from captum_fam.jobs.distributed import DistributedContext  # noqa: E402
from captum_fam.jobs.store import ATTRIBUTE, JobStore, StoreError, StoreLayout  # noqa: E402

LAYOUT = StoreLayout(items=10, references=1, map_shape=(2, 3), chunk_size=4,
                     map_dtype="float16", labels=True, predictions=False, masks=True)  # fmt: skip
SINGLE = DistributedContext()


def chunk(first: int, stop: int, value: float = 0.5) -> dict[str, np.ndarray]:
    n = stop - first
    return {
        "item_index": np.arange(first, stop, dtype=np.int64),
        "maps": np.full((n, 1, 2, 3), value, dtype=np.float16),
        "scores": np.full((n, 1), value, dtype=np.float32),
        "indices": np.zeros((n, 1), dtype=np.int64),
        "labels": np.arange(first, stop, dtype=np.int64) % 3,
        "pointing": np.ones(n, dtype=np.int8),
        "energy": np.full(n, 0.25, dtype=np.float32),
    }


def tree_digest(path: Path) -> str:
    """Every file's name and bytes: proof that nothing under ``path`` changed."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def open_store(path: Path, fingerprint: dict | None = None, **kwargs) -> JobStore:
    return JobStore.open(path, LAYOUT, fingerprint or {"model": "a"}, SINGLE, **kwargs)


def test_creates_arrays_chunked_by_items(tmp_path):
    store = open_store(tmp_path / "job.zarr", attributes={"settings": {"model": "a"}})
    group = zarr.open_group(tmp_path / "job.zarr", mode="r")
    assert group["maps"].shape == (10, 1, 2, 3) and group["maps"].chunks == (4, 1, 2, 3)
    assert group["maps"].dtype == np.float16 and group["chunk_digest"].shape == (3,)
    assert group["maps"].metadata.dimension_names == ("item", "reference", "y", "x")
    assert group.attrs["status"] == "running" and group.attrs[ATTRIBUTE]["fingerprint"]
    assert np.isnan(group["scores"][:]).all() and (group["item_index"][:] == -1).all()
    assert (store.recorded_digests() == 0).all()


def test_only_a_complete_chunk_reads_back(tmp_path):
    store = open_store(tmp_path / "job.zarr")
    data = chunk(4, 8)
    store.write_chunk(1, data)
    recorded = store.recorded_digests()
    assert recorded[0] == 0 and recorded[1] != 0
    read = store.read_chunk(1, int(recorded[1]))
    assert read is not None and all(np.array_equal(read[k], data[k]) for k in data)
    assert store.read_chunk(0, int(recorded[0])) is None  # never written

    # A rerun killed half-way: new data in some arrays only, the old record left in place.
    store.group["scores"][4:8] = np.full((4, 1), 0.75, dtype=np.float32)
    assert store.read_chunk(1, int(store.recorded_digests()[1])) is None

    # Data written, record never written (the process died in between).
    other = chunk(8, 10)
    for name, values in other.items():
        store.group[name][8:10] = values
    assert store.read_chunk(2, int(store.recorded_digests()[2])) is None


def test_a_torn_chunk_object_is_incomplete(tmp_path):
    store = open_store(tmp_path / "job.zarr")
    store.write_chunk(0, chunk(0, 4))
    recorded = int(store.recorded_digests()[0])
    torn = tmp_path / "job.zarr" / "maps" / "c" / "0" / "0" / "0" / "0"
    torn.write_bytes(torn.read_bytes()[:5])
    assert store.read_chunk(0, recorded) is None


def test_resume_accepts_the_same_job_only(tmp_path):
    path = tmp_path / "job.zarr"
    open_store(path, {"model": "a", "layer": "block4"}).write_chunk(0, chunk(0, 4))
    before = tree_digest(path)
    reopened = open_store(path, {"model": "a", "layer": "block4"})
    assert reopened.read_chunk(0, int(reopened.recorded_digests()[0])) is not None
    changed = r"layer \(store: 'block4', now: 'block3'\); model \(store: 'a', now: 'b'\)"
    with pytest.raises(StoreError, match=r"holds another job; these settings differ: " + changed):
        open_store(path, {"model": "b", "layer": "block3"})
    assert tree_digest(path) == before  # nothing was changed
    replaced = open_store(path, {"model": "b", "layer": "block3"}, overwrite=True)
    assert (replaced.recorded_digests() == 0).all()


def test_refuses_what_is_not_a_job_store(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"jpeg")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not a captum-fam job store; nothing was changed"):
            open_store(tmp_path / "photos", overwrite=overwrite)
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"jpeg"
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["x"] = 1
    with pytest.raises(StoreError, match="not a captum-fam job store"):
        open_store(tmp_path / "other.zarr")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    assert open_store(tmp_path / "empty").layout == LAYOUT  # an empty directory is fine
