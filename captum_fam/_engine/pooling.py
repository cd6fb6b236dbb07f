"""Pooling over positions: the (masked) mean that turns activations into an embedding.

``e = sum_s m_s A_s / sum_s m_s`` over the positions ``S`` of ``(N, C, *S)`` activations, with
``m`` the pooling mask (all ones when there is none): the mean pooling of CNNs, and the masked
mean pooling of sentence embedders, where padding positions enter neither the embedding nor
the map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["PoolingMask", "mask_from_inputs", "masked_mean", "positions"]

PoolingMask = Tensor | int | None


def positions(activations: Tensor) -> tuple[int, ...]:
    """The dimensions of ``(N, C, *S)`` activations that hold positions."""
    return tuple(range(2, activations.dim()))


def masked_mean(activations: Tensor, mask: Tensor | None) -> Tensor:
    """``(N, C)``: the mean of ``(N, C, *S)`` over the positions where ``mask`` is True."""
    if mask is None:
        return activations.mean(dim=positions(activations))
    weights = mask.unsqueeze(1).to(activations.dtype)
    total = (activations * weights).sum(dim=positions(activations))
    return total / weights.sum(dim=positions(activations))


def mask_from_inputs(
    pooling_mask: PoolingMask, inputs: tuple[Tensor, ...], role: str
) -> Tensor | None:
    """The raw mask for one side: a tensor given for the queries, or one of the inputs.

    ``role`` names the side in errors ("inputs", "reference", "foil", ...). A tensor mask
    belongs to the queries only: other sides must bring theirs among their inputs, by index.
    """
    if pooling_mask is None:
        return None
    if isinstance(pooling_mask, bool) or not isinstance(pooling_mask, (int, Tensor)):
        raise TypeError(
            "pooling_mask must be a (N, *S) tensor or the index of the mask among the inputs; "
            f"got {type(pooling_mask).__name__}"
        )
    if isinstance(pooling_mask, int):
        if not -len(inputs) <= pooling_mask < len(inputs):
            raise ValueError(
                f"pooling_mask={pooling_mask} is not the index of one of the {len(inputs)} "
                f"tensor(s) of {role}"
            )
        return inputs[pooling_mask]
    if role != "inputs":
        raise ValueError(
            f"pooling_mask is a tensor, which masks the queries only; {role} given as model "
            "inputs needs its own mask: pass pooling_mask as the index of the mask among the "
            f"inputs (e.g. pooling_mask=1 for (input_ids, attention_mask)), or give {role} as "
            "embeddings"
        )
    return pooling_mask


def check_mask(mask: Any, shape: tuple[int, ...], role: str) -> Tensor:
    """A bool ``(N, *S)`` mask from 0/1 values, every row with at least one valid position."""
    label = "pooling_mask" if role == "inputs" else f"pooling_mask of {role}"
    if not isinstance(mask, Tensor):
        raise TypeError(f"{label} must be a tensor; got {type(mask).__name__}")
    if mask.is_complex():
        raise TypeError(f"{label} must hold 0 and 1 (or bool); got {mask.dtype}")
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"{label} has shape {tuple(mask.shape)}; the layer's positions need (N, *S) = {shape}"
        )
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"{label} must hold only 0 and 1 (or be bool)")
        mask = mask != 0
    empty = (~mask.flatten(1).any(dim=1)).nonzero().flatten()
    if empty.numel():
        raise ValueError(
            f"{label} has no valid position in row(s) {empty.tolist()[:10]}: an example "
            "with no token to pool has no embedding"
        )
    return mask
