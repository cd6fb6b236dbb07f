"""Argument checks shared by the public entry points.

Each check raises a ValueError or TypeError that names the argument and says what was expected,
so that a user never meets an AssertionError from deep inside or a silent NaN map.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

TensorOrTuple = Tensor | tuple[Tensor, ...]


def all_finite(tensor: Tensor) -> bool:
    """Whether a tensor holds no NaN or Inf.

    One reduction first: any NaN or Inf makes the sum non-finite, and the sum costs a quarter of
    an elementwise ``isfinite``. Only when the sum is not finite (maybe a mere overflow) does the
    exact elementwise check run.
    """
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def format_batch(value: Any, name: str) -> tuple[Tensor, ...]:
    """A Tensor or a tuple of Tensors sharing the first dimension.

    Floating tensors (images, features) must be finite; integer and bool tensors (token ids,
    attention masks) are taken as they are. ``uint8`` is refused: it is how image bytes
    arrive, and a model needs them as floats.
    """
    if isinstance(value, Tensor):
        tensors: tuple[Tensor, ...] = (value,)
    elif isinstance(value, (tuple, list)) and value and all(isinstance(t, Tensor) for t in value):
        tensors = tuple(value)
    else:
        raise TypeError(
            f"{name} must be a Tensor or a non-empty tuple of Tensors; got {type(value).__name__}"
        )
    for index, tensor in enumerate(tensors):
        label = name if len(tensors) == 1 else f"{name}[{index}]"
        if tensor.dim() == 0:
            raise ValueError(f"{label} must have a batch dimension first; got a 0-d tensor")
        if tensor.dtype == torch.uint8 or tensor.is_complex():
            raise TypeError(
                f"{label} must be a floating point tensor (images as float, e.g. "
                f"images.float() / 255) or integer token ids; got {tensor.dtype}"
            )
        if tensor.is_floating_point() and not all_finite(tensor):
            raise ValueError(f"{label} contains NaN or Inf values")
    sizes = {tensor.shape[0] for tensor in tensors}
    if len(sizes) != 1:
        raise ValueError(
            f"all tensors of {name} must share the batch size; got first dimensions "
            f"{[tensor.shape[0] for tensor in tensors]}"
        )
    return tensors


def format_embeddings(value: Any, name: str) -> Tensor:
    """(M, C) or (C,) floating, finite embeddings, returned as (M, C)."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a Tensor of shape (M, C); got {type(value).__name__}")
    if value.dim() == 1:
        value = value.unsqueeze(0)
    if value.dim() != 2 or value.shape[0] == 0:
        raise ValueError(f"{name} must have shape (M, C) or (C,); got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor; got {value.dtype}")
    if not all_finite(value):
        raise ValueError(f"{name} contains NaN or Inf values")
    return value


def check_pairing(n: int, m: int, name: str) -> None:
    """References pair with queries when M == 1, M == N, or N is a multiple of M."""
    if m == 1 or n % m == 0:
        return
    raise ValueError(
        f"{name} has {m} rows for {n} inputs: give 1 (shared by all inputs), {n} (one per "
        f"input), or a divisor of {n} (each pairs with {n} // M consecutive inputs)"
    )


def check_choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value


def one_of(first: Any, second: Any, names: tuple[str, str]) -> None:
    """Exactly one of two alternative arguments is given."""
    if (first is None) == (second is None):
        given = "both" if first is not None else "neither"
        raise ValueError(f"give exactly one of {names[0]} or {names[1]}; got {given}")
