"""Reading what a forward produced: the layer's activations and the model's embedding.

The layer gives a value (a tensor, or a tuple around one) in its own layout: channels-first
``(N, C, *S)``, tokens ``(N, T, C)`` or channels-last grids, read through a token layout. The
model gives an output: the ``(N, D)`` embedding, or a structure that holds it (a dict, a tuple,
a Hugging Face output object), read through ``embedding_key``. Both become float32 or wider.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import captum
import torch
from torch import Tensor

from captum_fam._checks import all_finite
from captum_fam.tokens import TokenLayout

__all__ = [
    "EmbeddingKey",
    "activations_of",
    "caller_stacklevel",
    "embedding_of",
    "image_size",
    "outside_inference_mode",
    "single_tensor",
    "where",
]

EmbeddingKey = str | int | Callable[[Any], Tensor] | None


def where(to_input: bool) -> str:
    return "input" if to_input else "output"


def image_size(inputs: tuple[Tensor, ...]) -> tuple[int, int]:
    """The ``(H, W)`` a token layout lays patches on: the first input's last two dims."""
    height, width = inputs[0].shape[-2:] if inputs[0].dim() >= 2 else (1, inputs[0].shape[-1])
    return int(height), int(width)


def single_tensor(value: tuple[Any, ...], to_input: bool) -> Tensor:
    """The one tensor of a layer's value; trailing None entries (no cache) are allowed."""
    if value and isinstance(value[0], Tensor) and all(v is None for v in value[1:]):
        return value[0]
    side = where(to_input)
    raise ValueError(
        f"the layer's {side} is a tuple of {len(value)} values; FAM needs one "
        f"(N, C, *S) activation tensor: choose a layer with a single tensor {side}"
    )


def activations_of(
    value: tuple[Any, ...],
    inputs: tuple[Tensor, ...],
    layout: TokenLayout | None,
    to_input: bool,
    say: Callable[[str], None],
) -> Tensor:
    """Channels-first ``(N, C, *S)`` activations in float32 or wider; ``say`` warns once."""
    tensor = single_tensor(value, to_input)
    n = inputs[0].shape[0]
    if layout is not None and tensor.shape[:1] == (n,):
        tensor, prefix = layout.to_grid(tensor, image_size(inputs))
        if prefix:
            say(
                f"token layout: dropped {prefix} prefix token(s) (class/register tokens) "
                f"and read the rest as a {tuple(tensor.shape[2:])} grid"
            )
    side = where(to_input)
    if tensor.dim() < 3 or tensor.shape[0] != n:
        raise ValueError(
            f"the layer's {side} has shape {tuple(tensor.shape)}; FAM needs (N={n}, C, *S) "
            "activations with positions (a grid, a sequence): choose a layer before the "
            "global pooling"
        )
    if tensor.dim() == 3 and layout is None:
        _refuse_unlaid_tokens(tensor, inputs, side)
    if math.prod(tensor.shape[2:]) == 1:
        say(
            f"the layer's {side} has a single position (shape {tuple(tensor.shape)}): its "
            "map is one value and says nothing about where; choose an earlier layer with "
            "a spatial grid or a sequence"
        )
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _refuse_unlaid_tokens(tensor: Tensor, inputs: tuple[Tensor, ...], side: str) -> None:
    """A 3-D value read without a layout must not be transformer tokens ``(N, T, C)``."""
    shape = tuple(tensor.shape)
    if any(t.dim() >= 4 for t in inputs):
        raise ValueError(
            f"the layer's {side} has shape {shape}, tokens (N, T, C) of an image model: "
            "declare token_layout='auto' (a patch grid); FAM reads (N, C, *S) channels-first "
            "activations otherwise"
        )
    for tensor_input in inputs:
        if (
            not tensor_input.is_floating_point()
            and tensor_input.dim() == 2
            and tensor_input.shape[1] == shape[1] != shape[2]
        ):
            raise ValueError(
                f"the layer's {side} has shape {shape}, token states (N, T, C) of a sequence "
                "model: declare token_layout='sequence'; FAM reads (N, C, *S) channels-first "
                "activations otherwise"
            )


def embedding_of(output: Any, key: EmbeddingKey, n: int) -> Tensor:
    """The ``(N, D)`` embedding in a forward's output, float32 or wider."""
    if key is not None:
        output = _select(output, key)
    if not isinstance(output, Tensor):
        raise ValueError(
            f"the model returned {type(output).__name__}; FAM compares (N={n}, D) "
            "embeddings: pass embedding_key (a key, attribute name or index of the "
            "embedding, or a callable output -> tensor)" + _keys_hint(output)
        )
    if output.dim() != 2 or output.shape[0] != n:
        raise ValueError(
            f"the model's output has shape {tuple(output.shape)}; FAM compares (N={n}, D) "
            "embeddings: pass embedding_key to pick the embedding from the output, or "
            "embedding='layer' to compare the layer's pooled channels (e.g. a classifier "
            "used as a feature extractor: remove its classifier first)"
        )
    if not output.is_floating_point():
        raise TypeError(f"the model's embedding must be floating point; got {output.dtype}")
    if not all_finite(output):
        raise ValueError("the model's output contains NaN or Inf for these inputs")
    return output.to(torch.promote_types(output.dtype, torch.float32))


def _select(output: Any, key: str | int | Callable[[Any], Tensor]) -> Any:
    """Apply ``embedding_key`` to a structured output."""
    if callable(key) and not isinstance(key, (str, int)):
        return key(output)
    if isinstance(key, int):
        if isinstance(output, (tuple, list)) and -len(output) <= key < len(output):
            return output[key]
        raise ValueError(
            f"embedding_key={key} is not an index of the model's output "
            f"({type(output).__name__}"
            + (f" of {len(output)} values)" if isinstance(output, (tuple, list)) else ")")
        )
    if isinstance(output, dict) or hasattr(output, "keys"):
        try:
            return output[key]
        except (KeyError, TypeError):
            pass
    if hasattr(output, key):
        return getattr(output, key)
    raise ValueError(
        f"embedding_key={key!r} is neither a key nor an attribute of the model's output "
        f"({type(output).__name__}){_keys_hint(output)}"
    )


def _keys_hint(output: Any) -> str:
    if isinstance(output, dict) or hasattr(output, "keys"):
        with contextlib.suppress(Exception):
            return f"; its keys: {', '.join(map(str, list(output.keys())[:12]))}"
    if isinstance(output, (tuple, list)):
        return f"; it holds {len(output)} values"
    return ""


@contextlib.contextmanager
def outside_inference_mode() -> Iterator[Callable[[Any], Any]]:
    """Leave ``torch.inference_mode`` for a backward through the head.

    Yields a function that clones inference tensors (inputs made under inference mode) so
    that the head may save them for its backward.
    """

    def usable(value: Any) -> Any:
        if isinstance(value, Tensor):
            return value.clone() if value.is_inference() else value
        if isinstance(value, tuple):
            return tuple(usable(v) for v in value)
        if isinstance(value, list):
            return [usable(v) for v in value]
        if isinstance(value, dict):
            return {k: usable(v) for k, v in value.items()}
        return value

    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            yield usable
    else:
        yield lambda value: value


_LIBRARY_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # captum_fam
    os.path.dirname(os.path.abspath(captum.__file__)),  # captum's usage-logging wrapper
)


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the libraries."""
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    return level
