"""Faithfulness of maps to a score: deletion and insertion curves, average drop, increase.

All of them only need a score function ``score_fn(images) -> (N,)`` that holds its reference
fixed, so they work for any map method and any model: the similarity a FAM explains
(``lambda x: fam.similarity_scores(x, reference_embeddings=rows)``), a class logit, ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_fam.metrics._inputs import (
    ScoreFn,
    call_scores,
    check_images,
    check_positive_int,
    check_score_fn,
    format_maps,
)

__all__ = [
    "PerturbationCurves",
    "average_drop",
    "blur",
    "deletion",
    "increase_in_confidence",
    "insertion",
]


@dataclass
class PerturbationCurves:
    """Scores along a deletion or insertion path.

    Attributes:
        curves (Tensor): ``(N, steps + 1)`` scores; column ``k`` after a share
                    ``fractions[k]`` of the pixels was removed (deletion) or revealed
                    (insertion). Raw scores, or divided by the unperturbed image's score with
                    ``relative=True``.
        fractions (Tensor): ``(steps + 1,)`` shares of the pixels, from 0 to 1.
        auc (Tensor): ``(N,)`` area under each curve over ``fractions`` in ``[0, 1]``
                    (trapezoid rule): the mean score along the path.
    """

    curves: Tensor
    fractions: Tensor
    auc: Tensor


def blur(images: Tensor, sigma: float | None = None) -> Tensor:
    r"""Gaussian blur of ``(N, C, H, W)`` images (reflect padding, kernel cut at 3 sigma).

    Args:
        images (Tensor): ``(N, C, H, W)`` images.
        sigma (float, optional): Standard deviation in pixels. Default: None, meaning
                    ``max(H, W) / 16``: strong enough that small objects lose their shape.

    Returns:
        *Tensor* of the images' shape.

    Examples::

        >>> soft = blur(images, sigma=4.0)
    """
    images = check_images(images)
    side = max(images.shape[-2:])
    sigma = side / 16 if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"blur sigma must be positive; got {sigma}")
    radius = min(int(math.ceil(3 * sigma)), min(images.shape[-2:]) - 1)
    if radius < 1:
        return images.clone()
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    # Separable: one depthwise pass along each axis.
    out = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def deletion(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    steps: int = 20,
    fill: str | float | Tensor = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 64,
    relative: bool = False,
) -> PerturbationCurves:
    r"""Deletion curve (Petsiuk et al., RISE, 2018): remove pixels, most important first.

    At step ``k`` of ``steps``, the ``round(k / steps * H * W)`` pixels with the highest map
    values are replaced by the fill (all channels of a pixel together), and the image is
    scored. A faithful map makes the score fall fast: **lower AUC is better**. The reference
    inside ``score_fn`` stays fixed. Ties in the map are removed in raster order (a stable
    sort), so a constant map deletes from the top-left corner.

    ``score_fn`` is called on ``N * j`` images at a time (``j = max(1, batch_size // N)``
    steps), example-major: rows ``i * j ... i * j + j - 1`` are example ``i``'s perturbed
    images. That is the repeat_interleave order of Captum and of FAM's pairing rule, so
    ``lambda x: fam.similarity_scores(x, reference_embeddings=rows)`` with ``rows`` ``(N, D)``
    pairs every perturbed image with its own reference unchanged.

    Args:
        score_fn (Callable): ``images (B, C, H, W) -> (B,)`` scores, as above.
        images (Tensor): ``(N, C, H, W)`` images.
        maps (Tensor): ``(N, 1, h, w)`` or ``(N, h, w)`` maps (upsampled bilinearly to the
                    image size), or ``(N, C, H, W)`` input attributions (summed over channels).
        steps (int, optional): Number of steps; the curve has ``steps + 1`` points.
                    Default: 20
        fill (str, float or Tensor, optional): What replaces a removed pixel: ``"blur"`` (the
                    Gaussian-blurred image, :func:`blur`), or a baseline value or tensor
                    broadcastable to ``images`` (0.0: black). Default: ``"blur"``
        blur_sigma (float, optional): Sigma of the blur fill. Default: ``max(H, W) / 16``
        batch_size (int, optional): Images per ``score_fn`` call (at least ``N``).
                    Default: 64
        relative (bool, optional): Divide every curve by its unperturbed image's score
                    (which must then be positive). Default: False (raw scores; for cosine
                    similarity the AUC is then the mean cosine along the path)

    Returns:
        :class:`PerturbationCurves` with ``curves (N, steps + 1)``, ``fractions`` and
        ``auc (N,)``.

    Examples::

        >>> rows = fam.embed(references)
        >>> result = deletion(lambda x: fam.similarity_scores(x, reference_embeddings=rows),
        ...                   images, fam.attribute(images, reference_embeddings=rows))
        >>> result.auc.mean()
    """
    images, maps, filled, steps = _prepare(score_fn, images, maps, steps, fill, blur_sigma)
    return _curve(score_fn, images, filled, maps, steps, batch_size, relative, unperturbed=0)


def insertion(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    steps: int = 20,
    fill: str | float | Tensor = "blur",
    blur_sigma: float | None = None,
    batch_size: int = 64,
    relative: bool = False,
) -> PerturbationCurves:
    r"""Insertion curve (Petsiuk et al., RISE, 2018): reveal pixels, most important first.

    Starts from the fill (by default the blurred image) and, at step ``k``, restores the
    ``round(k / steps * H * W)`` pixels with the highest map values from the image. A faithful
    map makes the score rise fast: **higher AUC is better**. Arguments, batching and ties as
    in :func:`deletion`; with ``relative=True`` curves are divided by the score of the
    unperturbed image (the last point).

    Returns:
        :class:`PerturbationCurves` with ``curves (N, steps + 1)``, ``fractions`` and
        ``auc (N,)``.

    Examples::

        >>> result = insertion(score_fn, images, maps, steps=32, fill="blur")
        >>> result.curves[:, 0], result.curves[:, -1]    # blurred image, original image
    """
    images, maps, filled, steps = _prepare(score_fn, images, maps, steps, fill, blur_sigma)
    return _curve(score_fn, filled, images, maps, steps, batch_size, relative, unperturbed=-1)


def average_drop(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    score_offset: float = 0.0,
) -> Tensor:
    r"""Per-example drop in score when only the map's region is shown (Grad-CAM++, 2018).

    With ``E = images * m``, where ``m`` is the map upsampled to the image size, ReLU'd and
    divided by its maximum (an all-zero or all-negative map gives ``m = 0``, a blank
    ``E``), and ``Y = score + score_offset``::

        drop = max(0, Y(x) - max(Y(E), 0)) / Y(x)

    The mean over examples is the paper's Average Drop (times 100 for a percentage);
    **lower is better**. The definition needs positive scores: similarity scores can be zero
    or negative (cosine lies in ``[-1, 1]``), so give ``score_offset`` (1.0 shifts cosine to
    ``[0, 2]``) or only positive pairs; ``Y(E)`` is clamped at 0, so a drop lies in
    ``[0, 1]``. A non-positive ``Y(x)`` raises a ValueError naming the examples.

    Args:
        score_fn (Callable): ``images (N, C, H, W) -> (N,)`` scores against fixed references.
        images (Tensor): ``(N, C, H, W)`` images.
        maps (Tensor): ``(N, 1, h, w)``, ``(N, h, w)`` or ``(N, C, H, W)`` maps.
        score_offset (float, optional): Added to every score. Default: 0.0

    Returns:
        *Tensor* ``(N,)`` of drops in ``[0, 1]``.

    Examples::

        >>> drop = average_drop(score_fn, images, maps, score_offset=1.0).mean()
    """
    original, explained = _explanation_scores(score_fn, images, maps, score_offset)
    return (original - explained).clamp_min(0) / original


def increase_in_confidence(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    score_offset: float = 0.0,
) -> Tensor:
    r"""Per-example flag: does the map's region alone score higher than the image (Grad-CAM++)?

    ``E`` and ``Y`` as in :func:`average_drop`: the flag is ``Y(E) > Y(x)`` (strict, so an
    unchanged score is no increase). Its mean is the paper's Increase in Confidence;
    **higher is better**. The same positivity rule on ``Y(x)`` applies, so that the two
    metrics are computed on the same examples.

    Returns:
        *Tensor* ``(N,)`` of bools.

    Examples::

        >>> increase = increase_in_confidence(score_fn, images, maps, score_offset=1.0)
        >>> increase.float().mean()
    """
    original, explained = _explanation_scores(score_fn, images, maps, score_offset)
    return explained > original


def _explanation_scores(
    score_fn: ScoreFn, images: Tensor, maps: Tensor, score_offset: float
) -> tuple[Tensor, Tensor]:
    check_score_fn(score_fn)
    images = check_images(images)
    if not math.isfinite(float(score_offset)):
        raise ValueError(f"score_offset must be finite; got {score_offset}")
    m = format_maps(maps, images.shape[0], images.shape[-2:]).clamp_min(0)
    peak = m.flatten(1).amax(dim=1).clamp_min(torch.finfo(m.dtype).tiny)
    m = (m / peak[:, None, None]).to(images.dtype).unsqueeze(1)
    original = call_scores(score_fn, images) + score_offset
    bad = (original <= 0).nonzero().flatten()
    if len(bad):
        raise ValueError(
            f"score_fn gave non-positive scores (after score_offset={score_offset}) for "
            f"example(s) {bad.tolist()}: average drop and increase in confidence need positive "
            "scores; pass a score_offset (e.g. 1.0 for cosine similarity)"
        )
    explained = (call_scores(score_fn, images * m) + score_offset).clamp_min(0)
    return original, explained


def _prepare(
    score_fn: Any,
    images: Tensor,
    maps: Tensor,
    steps: int,
    fill: str | float | Tensor,
    blur_sigma: float | None,
) -> tuple[Tensor, Tensor, Tensor, int]:
    check_score_fn(score_fn)
    images = check_images(images)
    steps = check_positive_int(steps, "steps")
    maps = format_maps(maps, images.shape[0], images.shape[-2:])
    if isinstance(fill, str):
        if fill != "blur":
            raise ValueError(f"fill must be 'blur', a number or a Tensor; got {fill!r}")
        filled = blur(images, blur_sigma)
    elif isinstance(fill, Tensor):
        try:
            filled = torch.broadcast_to(fill.to(images), images.shape)
        except RuntimeError as error:
            raise ValueError(
                f"fill of shape {tuple(fill.shape)} does not broadcast to the images' shape "
                f"{tuple(images.shape)}"
            ) from error
    elif isinstance(fill, (int, float)) and not isinstance(fill, bool):
        filled = torch.full_like(images, float(fill))
    else:
        raise TypeError(f"fill must be 'blur', a number or a Tensor; got {type(fill).__name__}")
    return images, maps, filled, steps


def _curve(
    score_fn: ScoreFn,
    start: Tensor,
    end: Tensor,
    maps: Tensor,
    steps: int,
    batch_size: int,
    relative: bool,
    unperturbed: int,
) -> PerturbationCurves:
    """Scores of images that switch from ``start`` to ``end`` pixels, highest map first."""
    batch_size = check_positive_int(batch_size, "batch_size")
    n, c, h, w = start.shape
    pixels = h * w
    fractions = torch.linspace(0, 1, steps + 1)
    counts = torch.round(fractions * pixels).long().to(start.device)
    order = torch.argsort(-maps.flatten(1), dim=1, stable=True)
    # rank[i, p]: position of pixel p in example i's order; "switched at step k" = rank < count.
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(pixels, device=order.device).expand(n, -1).contiguous()
    )
    per_call = max(1, batch_size // n)
    columns = []
    for first in range(0, steps + 1, per_call):
        ks = counts[first : first + per_call]
        switched = (rank[:, None, :] < ks[None, :, None]).view(n, len(ks), 1, h, w)
        perturbed = torch.where(switched, end[:, None], start[:, None])
        scores = call_scores(score_fn, perturbed.reshape(n * len(ks), c, h, w))
        columns.append(scores.view(n, len(ks)))
    curves = torch.cat(columns, dim=1).cpu()
    if relative:
        base = curves[:, unperturbed]
        bad = (base <= 0).nonzero().flatten()
        if len(bad):
            raise ValueError(
                f"relative=True needs a positive score on the unperturbed image; example(s) "
                f"{bad.tolist()} score {base[bad].tolist()}"
            )
        curves = curves / base[:, None]
    return PerturbationCurves(curves, fractions, torch.trapezoid(curves, fractions, dim=1))
