"""FAM maps in ``captum.attr.visualization``.

Captum's visualizers take numpy ``(H, W, C)`` arrays of the image's size; FAM returns torch
``(N, 1, h, w)`` maps at the layer's resolution. These helpers do the conversion, and draw an
all-zero map (nothing to show, e.g. when the ReLU removed everything) as the plain image with a
warning instead of Captum's "Cannot normalize by scale factor = 0".
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from captum.attr import LayerAttribution
from captum.attr import visualization as viz
from matplotlib import pyplot as plt
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "CMAP",
    "MAP_LABEL",
    "attribution_to_numpy",
    "draw_map",
    "image_to_numpy",
    "scale_map",
    "visualize_fam",
]

CMAP = "inferno"
"""The colour map of FAM maps in captum-fam's figures (command line, tutorials, docs): dark for
no evidence, bright yellow for the most. Perceptually uniform, so equal steps in the map look
like equal steps in colour, and it stays ordered when printed in grey or seen with the common
colour-vision deficiencies (unlike ``"jet"``)."""

MAP_LABEL = "FAM map, share of the panel's maximum"
"""The colour bar's label for maps scaled by :func:`scale_map`."""

_SIGN_SELECTORS = {
    "positive": lambda a: a > 0,
    "negative": lambda a: a < 0,
    "absolute_value": lambda a: a != 0,
    "all": lambda a: a != 0,
}


def attribution_to_numpy(
    attribution: Tensor,
    size: tuple[int, int] | None = None,
    interpolate_mode: str = "bilinear",
) -> np.ndarray:
    r"""One map as a numpy ``(H, W, 1)`` array for ``captum.attr.visualization``.

    Args:
        attribution (Tensor): One map: ``(1, 1, h, w)``, ``(1, h, w)`` or ``(h, w)``.
        size (tuple[int, int], optional): Output ``(H, W)``, usually the image's; upsampled
                    with :meth:`LayerAttribution.interpolate`. Default: the map's own size.
        interpolate_mode (str, optional): Interpolation mode. Default: ``"bilinear"``

    Returns:
        *ndarray* ``(H, W, 1)`` float32.

    Examples::

        >>> attr = attribution_to_numpy(maps[0], size=image.shape[-2:])
        >>> viz.visualize_image_attr(attr, image_to_numpy(image), "blended_heat_map")
    """
    if attribution.dim() == 4 and attribution.shape[0] == 1:
        attribution = attribution[0]
    if attribution.dim() == 3 and attribution.shape[0] == 1:
        attribution = attribution[0]
    if attribution.dim() != 2:
        raise ValueError(
            "attribution must be one map, (1, 1, h, w), (1, h, w) or (h, w); got shape "
            f"{tuple(attribution.shape)} (index the batch first, e.g. maps[i])"
        )
    grid = attribution.detach().float()[None, None]
    if size is not None and tuple(size) != tuple(grid.shape[-2:]):
        grid = LayerAttribution.interpolate(grid, tuple(int(s) for s in size), interpolate_mode)
    return grid[0].permute(1, 2, 0).cpu().numpy()


def image_to_numpy(image: Tensor) -> np.ndarray:
    r"""An image tensor ``(3, H, W)`` or ``(1, 3, H, W)`` as numpy ``(H, W, 3)`` in [0, 1].

    Pass the image before normalization; values outside [0, 1] are rescaled to it (min-max)
    so that a normalized tensor still displays.
    """
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(
            f"image must be (C, H, W) or (1, C, H, W) with C in (1, 3); got {tuple(image.shape)}"
        )
    array = image.detach().float().permute(1, 2, 0).cpu().numpy()
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        array = (array - low) / max(high - low, 1e-12)
    return array


def scale_map(heat: np.ndarray, percentile: float = 100.0) -> np.ndarray:
    r"""A map's positive part as a share of its own maximum, for display in ``[0, 1]``.

    Each panel of a figure is scaled on its own, so that a method whose values are small or
    spiky (pixel-level gradients) is as visible as one whose values are large; say so in the
    figure (:data:`MAP_LABEL`).

    Args:
        heat (ndarray): A map of any shape, e.g. ``(H, W)`` or ``(H, W, 1)``.
        percentile (float, optional): Divide by this percentile of the positive values
                    instead of their maximum, and clip above 1: for spiky maps (Integrated
                    Gradients), where a few pixels would otherwise hide the rest.
                    Default: 100 (the maximum)

    Returns:
        *ndarray* of the same shape, float32 in ``[0, 1]``; all zero if nothing is positive.
    """
    positive = np.clip(np.asarray(heat, dtype=np.float32), 0.0, None)
    values = positive[positive > 0]
    if values.size == 0:
        return positive
    top = float(np.percentile(values, percentile)) if percentile < 100 else float(values.max())
    return np.clip(positive / max(top, 1e-30), 0.0, 1.0)


def draw_map(
    axis: Any,
    heat: np.ndarray,
    image: np.ndarray,
    title: str | None = None,
    cmap: str = CMAP,
    alpha: float = 0.75,
) -> Any:
    r"""Draw a scaled map over a grey copy of its image on a matplotlib axis.

    The colour's opacity grows with the value, so the image shows through where the map is
    low and the colour dominates where it is high.

    Args:
        axis (matplotlib.axes.Axes): Where to draw.
        heat (ndarray): ``(H, W)`` or ``(H, W, 1)`` values in ``[0, 1]``, at the image's size
                    (:func:`attribution_to_numpy`, then :func:`scale_map`).
        image (ndarray): ``(H, W, 3)`` RGB in ``[0, 1]`` (:func:`image_to_numpy`).
        title (str, optional): Axis title.
        cmap (str, optional): Colour map. Default: :data:`CMAP`
        alpha (float, optional): Opacity of the colour at the map's maximum. Default: 0.75

    Returns:
        A ``ScalarMappable`` of the colour map over ``[0, 1]``, for a colour bar.
    """
    values = np.asarray(heat, dtype=np.float32).reshape(image.shape[:2])
    grey = image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    axis.imshow(grey, cmap="gray", vmin=0.0, vmax=1.0)
    colours = plt.get_cmap(cmap)(values)
    colours[..., 3] = alpha * np.sqrt(values)
    axis.imshow(colours)
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap)
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title)
    return mappable


def visualize_fam(
    attribution: Tensor,
    image: Tensor,
    method: str = "blended_heat_map",
    sign: str = "positive",
    title: str | None = None,
    interpolate_mode: str = "bilinear",
    **kwargs: Any,
) -> tuple[Any, Any]:
    r"""Draw one FAM map over its image with ``captum.attr.visualization.visualize_image_attr``.

    Args:
        attribution (Tensor): One map, ``(1, 1, h, w)``, ``(1, h, w)`` or ``(h, w)``.
        image (Tensor): The query image, ``(3, H, W)`` or ``(1, 3, H, W)``, before
                    normalization.
        method (str, optional): A Captum visualization method. Default: ``"blended_heat_map"``
        sign (str, optional): ``"positive"``, ``"negative"``, ``"absolute_value"`` or
                    ``"all"``. Default: ``"positive"`` (FAM maps are ReLU-ed by default)
        title (str, optional): Axes title, e.g. the similarity score.
        interpolate_mode (str, optional): How the map is upsampled to the image.
                    Default: ``"bilinear"``
        **kwargs: Passed to ``visualize_image_attr`` (``plt_fig_axis``, ``cmap``,
                    ``alpha_overlay``, ``show_colorbar``, ``use_pyplot``, ...).

    Returns:
        ``(figure, axis)`` as ``visualize_image_attr`` returns them.

    Examples::

        >>> fig, ax = visualize_fam(maps[0], images[0], title=f"cos = {scores[0]:.2f}",
        ...                         use_pyplot=False)
    """
    picture = image_to_numpy(image)
    heat = attribution_to_numpy(attribution, picture.shape[:2], interpolate_mode)
    if sign not in _SIGN_SELECTORS:
        raise ValueError(f"sign must be one of {list(_SIGN_SELECTORS)}; got {sign!r}")
    if method != "original_image" and not _SIGN_SELECTORS[sign](heat).any():
        warnings.warn(
            f"the map has no {sign} values (all zero after ReLU?): drawing the image alone. "
            "Try relu_attributions=False or another layer or reference.",
            stacklevel=2,
        )
        return _draw_image(picture, title, **kwargs)
    return viz.visualize_image_attr(heat, picture, method=method, sign=sign, title=title, **kwargs)


def _draw_image(
    picture: np.ndarray,
    title: str | None,
    plt_fig_axis: tuple[Any, Any] | None = None,
    fig_size: tuple[int, int] = (6, 6),
    use_pyplot: bool = True,
    **_: Any,
) -> tuple[Any, Any]:
    # Captum normalizes the map even for method="original_image", so draw the image here.
    if plt_fig_axis is not None:
        figure, axis = plt_fig_axis
    elif use_pyplot:
        figure, axis = plt.subplots(figsize=fig_size)
    else:
        figure = Figure(figsize=fig_size)
        axis = figure.subplots()
    axis.imshow(picture)
    axis.xaxis.set_ticks_position("none")
    axis.yaxis.set_ticks_position("none")
    axis.set_yticklabels([])
    axis.set_xticklabels([])
    axis.grid(visible=False)
    if title:
        axis.set_title(title)
    return figure, axis
