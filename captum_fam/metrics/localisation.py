"""Localisation of maps against ground-truth masks: pointing game, energy, reference specificity."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_fam.metrics._inputs import check_images, format_maps, format_masks

__all__ = [
    "dilate",
    "energy_pointing_game",
    "pointing_game",
    "reference_specificity",
]


def dilate(masks: Tensor, tolerance: float) -> Tensor:
    r"""Grow ``(N, H, W)`` bool masks by every pixel within ``tolerance`` pixels (Euclidean).

    Args:
        masks (Tensor): ``(N, H, W)`` bool masks.
        tolerance (float): Radius in pixels; 0 returns the masks unchanged.

    Returns:
        *Tensor* ``(N, H, W)`` bool.

    Examples::

        >>> grown = dilate(masks, 3.0)
    """
    if not isinstance(masks, Tensor) or masks.dim() != 3:
        raise ValueError("masks must be a (N, H, W) tensor")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0 (pixels); got {tolerance}")
    radius = int(math.floor(tolerance))
    if radius == 0:
        return masks.bool()
    # Integer squared distances against the float64 radius: no float32 rounding at the rim.
    offsets = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float64)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= tolerance**2
    grown = F.conv2d(
        masks.float().unsqueeze(1), disc.float().view(1, 1, *disc.shape), padding=radius
    )
    return grown[:, 0] > 0.5


def pointing_game(maps: Tensor, masks: Tensor, tolerance: float | None = None) -> Tensor:
    r"""Pointing game (Zhang et al., 2018): does the map's maximum fall on the object?

    The maps are upsampled to the masks' size (``LayerAttribution.interpolate``, bilinear).
    An example is a **hit** when a pixel where the map reaches its maximum lies within
    ``tolerance`` pixels (Euclidean) of the mask, i.e. inside the mask dilated by a disc of
    that radius. The literature uses 15 px at 224 px; the default here is 5% of the image
    side. Ties: a hit when any of the tied maxima qualifies (as Quantus' ``PointingGame``,
    which this function reproduces with ``tolerance=0``). A constant map (all-zero included)
    points nowhere and is a **miss** (Quantus counts it as a hit, since all its pixels are
    maxima).

    Args:
        maps (Tensor): ``(N, 1, h, w)``, ``(N, h, w)`` or ``(N, C, H, W)`` maps.
        masks (Tensor): ``(N, H, W)`` or ``(N, 1, H, W)`` bool masks, none empty (an empty
                    mask raises a ValueError naming ``masks``).
        tolerance (float, optional): In pixels of the mask. Default: ``0.05 * max(H, W)``

    Returns:
        *Tensor* ``(N,)`` of bools; their mean is the pointing-game accuracy.

    Examples::

        >>> hits = pointing_game(fam.attribute(images, reference=references), batch.masks[:, 0])
        >>> hits.float().mean()
    """
    masks = format_masks(masks)
    maps = format_maps(maps, masks.shape[0], masks.shape[-2:])
    if tolerance is None:
        tolerance = 0.05 * max(masks.shape[-2:])
    region = dilate(masks.to(maps.device), float(tolerance))
    flat = maps.flatten(1)
    peak = flat.amax(dim=1, keepdim=True)
    at_peak = flat == peak
    hit = (at_peak & region.flatten(1)).any(dim=1)
    constant = flat.amin(dim=1) == peak[:, 0]
    return hit & ~constant


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    r"""Energy-based pointing game (Wang et al., Score-CAM, 2020): positive mass on the object.

    ``sum(relu(map) * mask) / sum(relu(map))`` after upsampling the maps to the masks' size
    (bilinear). A map without positive values has no energy and scores 0.

    Args:
        maps (Tensor): ``(N, 1, h, w)``, ``(N, h, w)`` or ``(N, C, H, W)`` maps.
        masks (Tensor): ``(N, H, W)`` or ``(N, 1, H, W)`` bool masks, none empty.

    Returns:
        *Tensor* ``(N,)`` of shares in ``[0, 1]``; higher is better. A uniform map scores
        the mask's share of the image.

    Examples::

        >>> energy = energy_pointing_game(maps, batch.masks[:, 0]).mean()
    """
    masks = format_masks(masks)
    maps = format_maps(maps, masks.shape[0], masks.shape[-2:]).clamp_min(0)
    total = maps.flatten(1).sum(dim=1)
    inside = (maps * masks.to(maps.device)).flatten(1).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(maps.dtype).tiny), 0.0)


def reference_specificity(
    masks: Tensor,
    maps: tuple[Tensor, Tensor] | None = None,
    map_fn: Callable[[Tensor, int], Tensor] | None = None,
    images: Tensor | None = None,
    tolerance: float | None = None,
) -> Tensor:
    r"""Does the map follow the reference? Two-object images, each object's class in turn.

    For images holding objects A and B, the map computed against a reference of A's class
    must point into A, and the map against B's class into B (:func:`pointing_game`, with its
    tolerance and tie rules). A reference-agnostic map (a saliency of the image alone) can
    pass at most one of the two, so its score stays near 0, and a map that follows the
    reference scores near 1.

    Args:
        masks (Tensor): ``(N, 2, H, W)`` bool masks of objects A and B (as
                    ``make_shapes(..., objects=2).masks``), none empty.
        maps (tuple[Tensor, Tensor], optional): Precomputed ``(maps_a, maps_b)``, each
                    ``(N, 1, h, w)``: the maps against a reference of A's and of B's class.
        map_fn (Callable, optional): Or ``map_fn(images, k) -> (N, 1, h, w)`` maps against a
                    reference of object ``k``'s class (``k`` in ``{0, 1}``); needs ``images``.
                    Give exactly one of ``maps`` and ``map_fn``.
        images (Tensor, optional): ``(N, C, H, W)`` images for ``map_fn``.
        tolerance (float, optional): As in :func:`pointing_game`. Default: 5% of the side.

    Returns:
        *Tensor* ``(N,)`` of bools (both maps hit their own object); the mean is the
        reference specificity.

    Examples::

        >>> batch = make_shapes(16, objects=2)
        >>> rows = prototypes[batch.labels]                       # (N, 2, D)
        >>> spec = reference_specificity(
        ...     batch.masks, map_fn=lambda x, k: fam.attribute(x, reference_embeddings=rows[:, k]),
        ...     images=batch.images)
        >>> spec.float().mean()
    """
    if (maps is None) == (map_fn is None):
        given = "both" if maps is not None else "neither"
        raise ValueError(f"give exactly one of maps or map_fn; got {given}")
    if not isinstance(masks, Tensor) or masks.dim() != 4 or masks.shape[1] != 2:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(f"masks must be (N, 2, H, W), one mask per object; got {shape}")
    if map_fn is not None:
        if not callable(map_fn):
            raise TypeError(f"map_fn must be callable; got {type(map_fn).__name__}")
        if images is None:
            raise ValueError("map_fn needs the images: pass images=(N, C, H, W)")
        images = check_images(images)
        if images.shape[0] != masks.shape[0]:
            raise ValueError(
                f"images hold {images.shape[0]} examples and masks {masks.shape[0]}; expected "
                "the same number"
            )
        maps = (map_fn(images, 0), map_fn(images, 1))
    if not isinstance(maps, (tuple, list)) or len(maps) != 2:
        raise ValueError("maps must be a pair (maps_a, maps_b)")
    hit_a = pointing_game(maps[0], masks[:, 0], tolerance)
    hit_b = pointing_game(maps[1], masks[:, 1], tolerance)
    return hit_a & hit_b
