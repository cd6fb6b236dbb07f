"""The job's output: a zarr (v3) group that several processes write at once, chunk by chunk.

Every array is chunked along the items only, ``chunk_size`` items per chunk object, so that the
rank that owns a chunk (:mod:`.sharding`) is the only writer of that object in every array.
Rank 0 alone writes metadata: it creates the group and its arrays before any rank starts, and
writes the summaries into the group's attributes at the end.

A chunk is complete when its data is written *and* its record in ``chunk_digest`` (a digest of
the chunk's bytes in every array, written after the data) matches what the arrays hold now. A
run killed half-way through a chunk leaves either no record or a record that does not match,
so a resumed run recomputes that chunk: a half-written chunk is never taken for complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from captum_fam.jobs.distributed import DistributedContext
from captum_fam.jobs.fingerprint import differences
from captum_fam.jobs.sharding import chunk_count, chunk_range

__all__ = ["ATTRIBUTE", "JobStore", "StoreLayout", "StoreError"]

ATTRIBUTE = "captum_fam_job"
"""The group attribute that marks a captum-fam job store and holds its fingerprint."""

FORMAT_VERSION = 1


class StoreError(ValueError):
    """The output cannot be used for this job (it holds something else, or another job)."""


@dataclass(frozen=True)
class StoreLayout:
    """The arrays of a job store.

    Attributes:
        items (int): N, the dataset's length.
        references (int): R, maps per item (1, or k for top-k retrieval).
        map_shape (tuple[int, ...]): S, the layer's positions (``(h, w)`` for images).
        chunk_size (int): Items per chunk.
        map_dtype (str): ``"float16"`` or ``"float32"``.
        labels (bool): The items carry labels (stored, and predictions with prototypes).
        predictions (bool): Class predictions against prototypes are stored.
        masks (bool): The items carry masks (pointing and energy metrics are stored).
    """

    items: int
    references: int
    map_shape: tuple[int, ...]
    chunk_size: int
    map_dtype: str
    labels: bool
    predictions: bool
    masks: bool

    @property
    def chunks(self) -> int:
        return chunk_count(self.items, self.chunk_size)

    def arrays(self) -> dict[str, tuple[tuple[int, ...], str, Any, tuple[str, ...]]]:
        """Per-item arrays: ``name -> (shape, dtype, fill value, dimension names)``."""
        n, r, space = self.items, self.references, self.map_shape
        spatial = {1: ("position",), 2: ("y", "x")}.get(
            len(space), tuple(f"s{i}" for i in range(len(space)))
        )
        arrays = {
            "item_index": ((n,), "int64", -1, ("item",)),
            "maps": ((n, r, *space), self.map_dtype, float("nan"), ("item", "reference", *spatial)),
            "scores": ((n, r), "float32", float("nan"), ("item", "reference")),
            "indices": ((n, r), "int64", -1, ("item", "reference")),
        }
        if self.labels:
            arrays["labels"] = ((n,), "int64", -1, ("item",))
        if self.predictions:
            arrays["predictions"] = ((n,), "int64", -1, ("item",))
        if self.masks:
            arrays["pointing"] = ((n,), "int8", -1, ("item",))
            arrays["energy"] = ((n,), "float32", float("nan"), ("item",))
        return arrays


class JobStore:
    """An open job store. Create it with :meth:`open` on every rank."""

    def __init__(self, group: Any, layout: StoreLayout) -> None:
        self.group = group
        self.layout = layout
        self._names = sorted(layout.arrays())
        self._arrays = {name: group[name] for name in self._names}
        self._digests = group["chunk_digest"]

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        layout: StoreLayout,
        fingerprint: dict[str, Any],
        context: DistributedContext,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
        constants: Mapping[str, tuple[np.ndarray, tuple[str, ...]]] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> JobStore:
        """Create the store (rank 0), or check that it holds this very job; then open it.

        Every rank raises the same :class:`StoreError` when the output holds something else
        or another job; nothing in it is changed then.

        Args:
            constants: Arrays written once at creation (reference embeddings, prototypes):
                    ``name -> (values, dimension names)``.
            attributes: Readable settings stored next to the fingerprint.
        """
        import zarr

        path = os.fspath(path)
        record = {"format": FORMAT_VERSION, "fingerprint": fingerprint, "layout": _json(layout)}
        problem: str | None = None
        if context.is_main:
            try:
                _prepare(path, record, overwrite, storage_options, constants, attributes, layout)
            except StoreError as error:
                problem = str(error)
        shared = context.broadcast_object(problem)  # rank 0's verdict, for every rank
        if shared is not None:
            raise StoreError(str(shared))
        group = zarr.open_group(path, mode="r+", storage_options=storage_options)
        return cls(group, layout)

    def recorded_digests(self) -> np.ndarray:
        """``(chunks,)`` uint64 records; 0 where no run completed the chunk."""
        return np.asarray(self._digests[:])

    def read_chunk(self, chunk: int, recorded: int) -> dict[str, np.ndarray] | None:
        """The chunk's data when its record matches the bytes stored now; None otherwise."""
        if recorded == 0:
            return None
        items = chunk_range(chunk, self.layout.items, self.layout.chunk_size)
        try:
            data = {name: np.asarray(self._arrays[name][items.start : items.stop])
                    for name in self._names}  # fmt: skip
        except Exception:  # noqa: BLE001 - a torn chunk object fails to decode in codec-specific ways
            return None
        return data if chunk_digest(data) == recorded else None

    def write_chunk(self, chunk: int, data: dict[str, np.ndarray]) -> None:
        """Write a chunk's data to every array, then its completion record."""
        items = chunk_range(chunk, self.layout.items, self.layout.chunk_size)
        if sorted(data) != self._names:
            raise AssertionError(f"chunk data {sorted(data)} != arrays {self._names}")
        for name in self._names:
            self._arrays[name][items.start : items.stop] = data[name]
        self._digests[chunk] = np.uint64(chunk_digest(data))

    def write_attributes(self, values: dict[str, Any]) -> None:
        """Rank 0 only: merge ``values`` into the group's attributes."""
        self.group.attrs.update(values)


def chunk_digest(data: Mapping[str, np.ndarray]) -> int:
    """A nonzero 64-bit digest of a chunk's names, shapes, dtypes and bytes."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(data):
        values = np.ascontiguousarray(data[name])
        digest.update(f"{name}{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    # 0 marks "no record"; a digest of 0 (odds 2**-64) is moved to 1.
    return int.from_bytes(digest.digest(), "little") or 1


def _json(layout: StoreLayout) -> dict[str, Any]:
    values = asdict(layout)
    values["map_shape"] = list(layout.map_shape)
    return values


def _prepare(
    path: str,
    record: dict[str, Any],
    overwrite: bool,
    storage_options: dict[str, Any] | None,
    constants: Mapping[str, tuple[np.ndarray, tuple[str, ...]]] | None,
    attributes: dict[str, Any] | None,
    layout: StoreLayout,
) -> None:
    """Rank 0: check what ``path`` holds, then create the store or accept it for a resume."""
    import zarr

    stored = _stored_record(path, storage_options)
    if stored is not None and not overwrite:
        if json.loads(json.dumps(record)) == stored:
            return  # the same job: resume
        changed = differences(stored.get("fingerprint", {}), record["fingerprint"])
        changed += [
            change
            for change in differences(stored.get("layout", {}), record["layout"])
            if change not in changed
        ]
        world = record["fingerprint"].get("world_size")
        stored_world = stored.get("fingerprint", {}).get("world_size")
        resume = (
            f" (to resume it, run {stored_world} processes, as the run that started it)"
            if stored_world != world and len(changed) == 1
            else ""
        )
        raise StoreError(
            f"output {path!r} holds another job; these settings differ: "
            + "; ".join(changed or ["the store's format version"])
            + f". Nothing was changed{resume}: write to a new output, or pass overwrite=True "
            "(--overwrite) to replace it"
        )
    group = zarr.open_group(path, mode="w", storage_options=storage_options)
    for name, (shape, dtype, fill, dims) in layout.arrays().items():
        group.create_array(
            name,
            shape=shape,
            chunks=(layout.chunk_size, *shape[1:]),
            dtype=dtype,
            fill_value=fill,
            dimension_names=dims,
        )
    group.create_array(
        "chunk_digest", shape=(layout.chunks,), chunks=(1,), dtype="uint64", fill_value=0,
        dimension_names=("chunk",),
    )  # fmt: skip
    for name, (values, dims) in (constants or {}).items():
        array = group.create_array(
            name, shape=values.shape, dtype=values.dtype, dimension_names=dims
        )
        array[...] = values
    group.attrs.update({ATTRIBUTE: record, "status": "running", **(attributes or {})})


def _stored_record(path: str, storage_options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job record at ``path``; None when nothing is there. StoreError for anything else."""
    import zarr

    if "://" in path:  # an object store or remote filesystem, through fsspec
        import fsspec

        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        exists, is_dir = fs.exists(root), fs.isdir(root)
        empty = is_dir and not fs.ls(root)
    else:
        exists, is_dir = os.path.exists(path), os.path.isdir(path)
        empty = is_dir and not os.listdir(path)
    if not exists or empty:
        return None
    if not is_dir:
        raise StoreError(f"output {path!r} is a file; give a directory (a zarr store) instead")
    try:
        group = zarr.open_group(path, mode="r", storage_options=storage_options)
        record = group.attrs.get(ATTRIBUTE)
    except Exception:  # noqa: BLE001 - zarr raises several kinds for "not a group"
        record = None
    if not isinstance(record, dict):
        raise StoreError(
            f"output {path!r} exists and is not a captum-fam job store; nothing was changed: "
            "give a new or empty directory"
        )
    return record
