"""Input checks and shape glue shared by the metrics: maps, masks, images, score functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import LayerAttribution
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]


def check_images(images: Any, name: str = "images") -> Tensor:
    """(N, C, H, W) floating, finite images."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a Tensor (N, C, H, W); got {type(images).__name__}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, C, H, W) with N >= 1; got {_shape(images)}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor; got {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return images


def format_maps(maps: Any, n: int, size: Sequence[int], name: str = "maps") -> Tensor:
    """(N, H, W) float maps at ``size``, from (N, 1, h, w), (N, h, w) or (N, C, h, w).

    Layer maps are upsampled with ``LayerAttribution.interpolate`` (bilinear); several channels
    (input attributions such as Integrated Gradients') are summed first, as is usual for
    saliency on RGB images.
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a Tensor (N, 1, h, w) or (N, h, w); got "
                        f"{type(maps).__name__}")  # fmt: skip
    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[0] != n:
        raise ValueError(
            f"{name} must have shape (N={n}, 1, h, w) or (N={n}, h, w); got {_shape(maps)}"
        )
    if not maps.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor; got {maps.dtype}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    if maps.shape[1] != 1:
        maps = maps.sum(dim=1, keepdim=True)
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = LayerAttribution.interpolate(maps.float(), tuple(size), "bilinear")
    return maps[:, 0]


def format_masks(masks: Any, n: int | None = None, name: str = "masks") -> Tensor:
    """(N, H, W) bool masks from (N, H, W) or (N, 1, H, W); every mask must be non-empty."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"{name} must be a bool Tensor (N, H, W); got {type(masks).__name__}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3 or (n is not None and masks.shape[0] != n):
        expected = "N" if n is None else f"N={n}"
        raise ValueError(f"{name} must have shape ({expected}, H, W); got {_shape(masks)}")
    if masks.dtype != torch.bool and not bool(((masks == 0) | (masks == 1)).all()):
        raise ValueError(f"{name} must be boolean (or hold only 0 and 1)")
    masks = masks.bool()
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(
            f"{name} is empty (no True pixel) for example(s) {empty.tolist()}: a localisation "
            "metric needs a non-empty ground-truth region"
        )
    return masks


def check_score_fn(score_fn: Any) -> None:
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable images -> (N,); got {type(score_fn).__name__}")


def call_scores(score_fn: ScoreFn, images: Tensor, name: str = "score_fn") -> Tensor:
    """Runs ``score_fn`` without autograd and checks it returns one finite score per image."""
    with torch.no_grad():
        scores = score_fn(images)
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must return a Tensor of scores; got {type(scores).__name__}")
    scores = scores.detach()
    if scores.dim() == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.shape != (images.shape[0],):
        raise ValueError(
            f"{name} must return one score per image, shape ({images.shape[0]},); got "
            f"{_shape(scores)}"
        )
    return scores.float()


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    return value


def _shape(value: Tensor) -> tuple[int, ...]:
    return tuple(value.shape)
