"""``explain_dataset``: explain every item of a dataset into a store, on any number of processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captum_fam._engine import Engine, Queries
from captum_fam.attribution import FeatureActivationMap
from captum_fam.jobs.distributed import DistributedContext, init_distributed
from captum_fam.jobs.fingerprint import check_ranks_agree, explainer_settings, tensor_digest
from captum_fam.jobs.items import Batch, ItemSignature, batch_loader, read_item
from captum_fam.jobs.references import (
    Explained,
    FixedReferences,
    GalleryReferences,
    PrototypeReferences,
)
from captum_fam.jobs.sharding import batches_of, chunk_range, rank_chunks
from captum_fam.jobs.store import JobStore, StoreLayout
from captum_fam.jobs.summaries import chunk_sums, reduce_summary
from captum_fam.jobs.writer import ChunkWriter

__all__ = ["DatasetExplanation", "explain_dataset"]

MAP_DTYPES = ("float16", "float32")

References = FixedReferences | PrototypeReferences | GalleryReferences


@dataclass
class DatasetExplanation:
    """What :func:`explain_dataset` did.

    Attributes:
        path (str): The store.
        summary (dict): The summaries written into the store's attributes (every rank).
        computed (int): Chunks this run computed (all ranks together).
        resumed (int): Chunks an earlier run had completed, verified and kept.
    """

    path: str
    summary: dict[str, Any]
    computed: int
    resumed: int

    def open(self) -> Any:
        """The store as a read-only ``zarr.Group``."""
        import zarr

        return zarr.open_group(self.path, mode="r")


def explain_dataset(
    fam: FeatureActivationMap,
    dataset: Any,
    out: str | os.PathLike[str],
    *,
    reference_embeddings: Tensor | None = None,
    prototypes: Tensor | None = None,
    classes: Tensor | None = None,
    gallery_embeddings: Any = None,
    k: int = 5,
    batch_size: int = 64,
    chunk_size: int = 256,
    map_dtype: str = "float16",
    relu_attributions: bool = True,
    normalize_weights: bool = True,
    pooling_mask: int | None = None,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
) -> DatasetExplanation:
    r"""Explain every item of a dataset and store the maps, on one process or many.

    Run it as it is in one process, or in each process of a ``torchrun`` job (one machine or
    several): the process group is set up from the environment (Gloo on CPU, NCCL with CUDA),
    and the store's chunks are dealt out by index, so every item is explained exactly once.
    A rerun on the same output resumes: chunks that a run completed and that verify are kept,
    the rest are computed. Settings that would mix results (another model, layer, similarity,
    weighting, references, dataset length, world size, map dtype...) stop the rerun with a
    ValueError naming them, and nothing in the store is changed.

    Give exactly one of ``reference_embeddings``, ``prototypes`` and ``gallery_embeddings``.

    Args:
        fam (FeatureActivationMap): The model, layer, similarity and weighting.
        dataset (Dataset): A map-style dataset (``len`` and indexing). An item is the model's
                    input (a Tensor, or a tuple of Tensors), or ``(inputs, label)``,
                    ``(inputs, mask)``, ``(inputs, label, mask)``: a label is an int (or 0-d
                    integer tensor), a mask an ``(H, W)`` tensor, nonzero on the object, that
                    enables the pointing and energy metrics. Several inputs are nested:
                    ``((input_ids, attention_mask), label)``.
        out (str or PathLike): The zarr store: a directory, or a URL that fsspec knows
                    (``s3://bucket/job.zarr``, with ``storage_options``).
        reference_embeddings (Tensor, optional): ``(1, D)`` or ``(D,)`` shared by every item,
                    or ``(N, D)``, row i for item i.
        prototypes (Tensor, optional): ``(W, D)`` class prototypes
                    (:func:`captum_fam.tasks.class_prototypes`): each item is explained against
                    the prototype of its label, and the closest prototype's class is stored.
        classes (Tensor, optional): The ``(W,)`` labels of ``prototypes``. Default:
                    ``0 .. W-1``
        gallery_embeddings (Tensor or GalleryShard, optional): ``(G, D)`` gallery embeddings
                    (each rank keeps a contiguous share), or this rank's
                    :class:`~captum_fam.jobs.GalleryShard` of a larger one: each item is
                    explained against its top-k rows.
        k (int, optional): Gallery rows per item. Default: 5
        batch_size (int, optional): Items per forward. Default: 64
        chunk_size (int, optional): Items per chunk of the store: the unit of writing,
                    sharding and resuming. Default: 256
        map_dtype (str, optional): ``"float16"`` (half the space) or ``"float32"``.
                    Default: ``"float16"``
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`.
        pooling_mask (int, optional): Index of the pooling mask among the inputs.
                    Default: None
        device (torch.device or str, optional): Where the inputs go. Default: the device of
                    the model's first parameter (CPU for a function)
        num_workers (int, optional): DataLoader worker processes per rank. Default: 0
        overwrite (bool, optional): Replace a store that holds another job (never a
                    directory that is not a job store). Default: False
        progress (bool, optional): A progress bar on rank 0. Default: True
        storage_options (dict, optional): fsspec options for a URL ``out``. Default: None
        attributes (dict, optional): JSON-serialisable facts stored in the store's attributes
                    when it is created (where the items come from, class names); not part of
                    the fingerprint. Default: None

    Returns:
        :class:`DatasetExplanation`: the store's path, the summaries and the chunk counts.

    The store holds ``maps (N, R, *S)``, ``scores (N, R)``, ``indices (N, R)`` (the reference
    row, prototype row or gallery row each map explains; R = 1, or k for a gallery),
    ``item_index (N,)`` (each row's item, -1 until written), ``labels`` and
    ``predictions (N,)`` with labels and prototypes, ``pointing (N,)`` (1 hit, 0 miss) and
    ``energy (N,)`` with masks, and ``chunk_digest`` (the chunks' completion records).
    Its attributes hold the settings and, once every chunk is complete, ``summary``:
    ``mean_score``, ``pointing_rate``, ``energy_rate``, ``accuracy`` and ``mean_map`` (of
    each item's first map).

    Examples::

        >>> classes, prototypes = class_prototypes(fam.embed(support), support_labels)
        >>> result = explain_dataset(fam, test_set, "audit.zarr", prototypes=prototypes,
        ...                          classes=classes)
        >>> result.summary["accuracy"], result.summary["pointing_rate"]
        >>> maps = zarr.open_group("audit.zarr")["maps"][:100]     # (100, 1, h, w)
    """
    if not isinstance(fam, FeatureActivationMap):
        raise TypeError(f"fam must be a FeatureActivationMap; got {type(fam).__name__}")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            "dataset must be a map-style dataset (len() and dataset[i]); got "
            f"{type(dataset).__name__}"
        )
    items = len(dataset)
    if items == 0:
        raise ValueError("dataset is empty: there is nothing to explain")
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1; got {value!r}")
    if map_dtype not in MAP_DTYPES:
        raise ValueError(f"map_dtype must be one of {list(MAP_DTYPES)}; got {map_dtype!r}")
    given = [name for name, value in (("reference_embeddings", reference_embeddings),
             ("prototypes", prototypes), ("gallery_embeddings", gallery_embeddings))
             if value is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError(
            "give exactly one of reference_embeddings, prototypes or gallery_embeddings; got "
            + (", ".join(given) if given else "none")
        )
    if classes is not None and prototypes is None:
        raise ValueError("classes label the prototypes: give prototypes too")

    context = init_distributed()
    engine = fam.engine
    device = _device(engine, device)
    first = dataset[0]
    signature = ItemSignature.of(first, 0)
    first_inputs = read_item(first, 0)[0]
    # One forward of item 0 tells the map's shape and the embedding's width and dtype.
    probe = _queries(engine, tuple(t.unsqueeze(0) for t in first_inputs), device, pooling_mask)
    dim, dtype = probe.embeddings.shape[1], probe.embeddings.dtype

    references = _references(
        reference_embeddings, prototypes, classes, gallery_embeddings, k, items, signature,
        context,
    )  # fmt: skip
    _check_dim(references.rows, dim, given[0], engine)

    layout = StoreLayout(
        items=items,
        references=references.count,
        map_shape=tuple(int(s) for s in probe.activations.shape[2:]),
        chunk_size=chunk_size,
        map_dtype=map_dtype,
        labels=signature.has_label,
        predictions=references.predicts,
        masks=signature.mask_shape is not None,
    )
    fingerprint = {
        **explainer_settings(engine, relu_attributions, normalize_weights, pooling_mask),
        "items": items,
        "item_form": f"{signature.describe()} ({', '.join(map(str, signature.dtypes))})",
        "first_item": tensor_digest(first_inputs),
        "world_size": context.world_size,
        "map_dtype": map_dtype,
        **references.fingerprint(context),
    }
    check_ranks_agree(fingerprint, context)
    store = JobStore.open(
        out, layout, fingerprint, context, overwrite, storage_options,
        references.constants(), {**(attributes or {}), "settings": fingerprint},
    )  # fmt: skip

    mine = rank_chunks(items, chunk_size, context.rank, context.world_size)
    recorded = store.recorded_digests()
    sums: dict[int, np.ndarray] = {}
    pending = []
    for chunk in mine:
        data = store.read_chunk(chunk, int(recorded[chunk]))
        if data is None:
            pending.append(chunk)
        else:
            sums[chunk] = chunk_sums(data, layout)
    batches = [
        b for c in pending for b in batches_of(chunk_range(c, items, chunk_size), batch_size)
    ]
    steps = len(batches)
    if references.collective:  # every rank takes part in every gallery round
        steps = context.all_reduce_max(steps)
    bar = _progress_bar(progress and context.is_main, sum(len(b) for b in batches), context,
                        len(mine) - len(pending))  # fmt: skip
    explain_args = {"relu_attributions": relu_attributions, "normalize_weights": normalize_weights}
    explainer = _Explainer(engine, references, device, pooling_mask, batch_size, dim, dtype,
                           context, explain_args)  # fmt: skip
    loaded = iter(batch_loader(dataset, batches, signature, num_workers))
    _explain_batches(explainer, loaded, steps, ChunkWriter(store, sums), bar)

    summary = reduce_summary(sums, layout, context)
    if context.is_main:
        store.write_attributes({"summary": summary, "status": "complete"})
    counts = context.all_reduce_sum(torch.tensor([len(pending), len(mine) - len(pending)]))
    context.barrier()  # the store is complete for every rank that returns
    return DatasetExplanation(os.fspath(out), summary, int(counts[0]), int(counts[1]))


@dataclass
class _Explainer:
    """What every batch of the job needs: the engine, the references and the settings."""

    engine: Engine
    references: References
    device: torch.device
    pooling_mask: int | None
    capacity: int  # batch_size: the fixed size of a gallery round's tensors
    dim: int
    dtype: torch.dtype
    context: DistributedContext
    explain_args: dict[str, bool]

    @torch.no_grad()
    def explain(self, batch: Batch | None) -> Explained | None:
        """One batch (None: this rank's batches are done, but a gallery round needs it)."""
        engine, references = self.engine, self.references
        queries = None if batch is None else _queries(
            engine, batch.inputs, self.device, self.pooling_mask
        )  # fmt: skip
        if isinstance(references, GalleryReferences):
            return references.explain_step(
                engine, queries, self.capacity, self.dim, self.dtype, self.device, self.context,
                self.explain_args,
            )  # fmt: skip
        assert batch is not None and queries is not None
        return references.explain(engine, queries, batch.indices, batch.labels,
                                  self.explain_args)  # fmt: skip


def _explain_batches(
    explainer: _Explainer, loaded: Iterator[Batch], steps: int, writer: ChunkWriter, bar: Any
) -> None:
    """This rank's batches, explained and handed to the writer."""
    try:
        for _ in range(steps):
            batch = next(loaded, None)
            explained = explainer.explain(batch)
            if batch is not None:
                assert explained is not None
                writer.add(batch, explained)
                if bar is not None:
                    bar.update(len(batch.indices))
    except BaseException:
        writer.close(raise_error=False)  # chunks finished before the error are still written
        raise
    finally:
        if bar is not None:
            bar.close()
    writer.close()


def _references(
    reference_embeddings: Any,
    prototypes: Any,
    classes: Any,
    gallery_embeddings: Any,
    k: int,
    items: int,
    signature: ItemSignature,
    context: DistributedContext,
) -> References:
    if reference_embeddings is not None:
        return FixedReferences(reference_embeddings, items)
    if prototypes is not None:
        if not signature.has_label:
            raise ValueError(
                "prototypes need a label per item: dataset items must be (inputs, label); "
                f"item 0 has {signature.describe()}"
            )
        return PrototypeReferences(prototypes, classes)
    return GalleryReferences(gallery_embeddings, k, context)


def _queries(
    engine: Engine, inputs: tuple[Tensor, ...], device: torch.device, pooling_mask: int | None
) -> Queries:
    batch = tuple(t.to(device) for t in inputs)
    with torch.no_grad():
        return engine.queries(batch, None, False, pooling_mask)


def _device(engine: Engine, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    model = engine.forward_func
    if isinstance(model, nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")


def _check_dim(rows: Tensor, dim: int, name: str, engine: Engine) -> None:
    if rows.shape[1] != dim:
        space = "model output" if engine.embedding == "output" else "layer"
        raise ValueError(
            f"{name} have {rows.shape[1]} channels but the {space} has {dim}: embeddings must "
            "live in the space of fam.embed"
        )


def _progress_bar(show: bool, total: int, context: DistributedContext, resumed: int) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    note = f", {resumed} chunk(s) already complete" if resumed else ""
    return tqdm(
        total=total,
        desc=f"explain_dataset (rank 0 of {context.world_size}{note})",
        unit="item",
        file=sys.stderr,
    )
