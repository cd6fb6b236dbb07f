"""Dataset items: what an item may hold, and batches of them checked against item 0.

An item is the model's input (a Tensor, or a tuple of Tensors for a model with several
inputs), or a tuple ``(inputs, extra, ...)`` whose extras are recognised by their form:

- a **label**: a Python int or a 0-d integer tensor (needed with class prototypes);
- a **mask**: a tensor of two or more dimensions, ``(H, W)`` or ``(1, H, W)``, nonzero on the
  object (enables the pointing and energy metrics).

A model with several inputs gives them as a nested tuple, ``((input_ids, attention_mask),
label)``. Every item must look like item 0: same inputs, shapes and dtypes, same extras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["Batch", "ItemSignature", "batch_loader", "read_item"]


@dataclass
class Batch:
    """Consecutive items, stacked: ``inputs`` tuple, ``labels (B,)`` and ``masks (B, H, W)``."""

    indices: range
    inputs: tuple[Tensor, ...]
    labels: Tensor | None
    masks: Tensor | None


@dataclass(frozen=True)
class ItemSignature:
    """What every item must match: its inputs' shapes and dtypes, its extras."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    has_label: bool
    mask_shape: tuple[int, ...] | None

    @classmethod
    def of(cls, item: Any, index: int = 0) -> ItemSignature:
        inputs, label, mask = read_item(item, index)
        return cls(
            tuple(tuple(t.shape) for t in inputs),
            tuple(t.dtype for t in inputs),
            label is not None,
            None if mask is None else tuple(mask.shape),
        )

    def describe(self) -> str:
        shapes = ", ".join(str(s) for s in self.shapes)
        extras = (" with a label" if self.has_label else "") + (
            f" with a mask of shape {self.mask_shape}" if self.mask_shape else ""
        )
        return f"inputs of shape {shapes}{extras}"


def read_item(item: Any, index: int) -> tuple[tuple[Tensor, ...], int | None, Tensor | None]:
    """An item's ``(inputs, label, mask)``; a ValueError or TypeError names the item."""
    if isinstance(item, Tensor):
        return (item,), None, None
    if not isinstance(item, (tuple, list)) or not item:
        raise TypeError(
            f"dataset item {index} is a {type(item).__name__}; an item is a Tensor of inputs, "
            "or a tuple (inputs, label and/or mask)"
        )
    first, extras = item[0], item[1:]
    if isinstance(first, Tensor):
        inputs: tuple[Tensor, ...] = (first,)
    elif isinstance(first, (tuple, list)) and first and all(isinstance(t, Tensor) for t in first):
        inputs = tuple(first)
    else:
        raise TypeError(
            f"dataset item {index}: the first element must be the inputs (a Tensor or a tuple "
            f"of Tensors); got {type(first).__name__}"
        )
    label: int | None = None
    mask: Tensor | None = None
    for extra in extras:
        if _is_label(extra):
            if label is not None:
                raise ValueError(f"dataset item {index} holds two labels")
            label = int(extra)
        elif isinstance(extra, Tensor) and extra.dim() >= 2:
            if mask is not None:
                raise ValueError(f"dataset item {index} holds two masks")
            mask = _as_mask(extra, index)
        else:
            what = (
                f"tensor of shape {tuple(extra.shape)}"
                if isinstance(extra, Tensor)
                else (type(extra).__name__)
            )
            raise TypeError(
                f"dataset item {index}: an extra element must be a label (int or 0-d integer "
                f"tensor) or a mask ((H, W) or (1, H, W) tensor); got a {what}. A model with "
                "several inputs takes them as a nested tuple: ((input_a, input_b), label)"
            )
    return inputs, label, mask


def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return (
        isinstance(value, Tensor)
        and value.dim() == 0
        and not value.is_floating_point()
        and value.dtype != torch.bool
    )


def _as_mask(value: Tensor, index: int) -> Tensor:
    if value.dim() == 3 and value.shape[0] == 1:
        value = value[0]
    if value.dim() != 2:
        raise ValueError(
            f"dataset item {index}: a mask must be (H, W) or (1, H, W); got shape "
            f"{tuple(value.shape)}"
        )
    mask = value != 0
    if not bool(mask.any()):
        raise ValueError(
            f"dataset item {index} has an empty mask: the pointing and energy metrics need the "
            "object's pixels; leave the mask out of the items to skip the metrics"
        )
    return mask


class _Indexed(Dataset):
    """Yields ``(index, item)`` so that a batch knows, and reports, which items it holds."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]


class _Collate:
    def __init__(self, signature: ItemSignature) -> None:
        self.signature = signature

    def __call__(self, pairs: Sequence[tuple[int, Any]]) -> Batch:
        reference = self.signature
        inputs, labels, masks = [], [], []
        for index, item in pairs:
            item_inputs, label, mask = read_item(item, index)
            found = ItemSignature(
                tuple(tuple(t.shape) for t in item_inputs),
                tuple(t.dtype for t in item_inputs),
                label is not None,
                None if mask is None else tuple(mask.shape),
            )
            if found != reference:
                raise ValueError(
                    f"dataset items must all have the same form: item 0 has "
                    f"{reference.describe()} ({', '.join(map(str, reference.dtypes))}); item "
                    f"{index} has {found.describe()} ({', '.join(map(str, found.dtypes))})"
                )
            inputs.append(item_inputs)
            labels.append(label)
            masks.append(mask)
        indices = [index for index, _ in pairs]
        return Batch(
            range(indices[0], indices[-1] + 1),
            tuple(torch.stack(column) for column in zip(*inputs, strict=True)),
            torch.tensor(labels, dtype=torch.int64) if reference.has_label else None,
            torch.stack(masks) if reference.mask_shape is not None else None,  # type: ignore[arg-type]
        )


def batch_loader(
    dataset: Any, batches: Sequence[range], signature: ItemSignature, num_workers: int = 0
) -> DataLoader:
    """Batches of ``dataset`` in the given order (explicit item indices, no sampler)."""
    return DataLoader(
        _Indexed(dataset),
        batch_sampler=[list(b) for b in batches],
        collate_fn=_Collate(signature),
        num_workers=num_workers,
    )
