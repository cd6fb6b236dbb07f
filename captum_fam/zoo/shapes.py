"""A procedural world of geometric shapes on clutter, drawn in torch for a whole batch at once.

Every image holds one or two objects whose class is decided by geometry only: colour, size,
position and rotation are drawn independently of the class, and the background is a clutter of
smooth colour noise, stripes and soft blobs that contains no shape of any class. The masks are
exact: a mask is the set of pixels the object was painted on, and every such pixel carries the
object's flat colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "HELD_OUT_CLASSES",
    "SEEN_CLASSES",
    "SHAPE_CLASSES",
    "ShapesBatch",
    "make_shapes",
]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "diamond",
    "arrow",
    "L",
    "T",
    "hourglass",
)
"""Names of the shape classes; a label is an index into this tuple."""

HELD_OUT_CLASSES: tuple[str, ...] = ("crescent", "arrow", "hourglass")
"""Classes the shipped model never saw during training (kept for few-shot evaluation)."""

SEEN_CLASSES: tuple[str, ...] = tuple(c for c in SHAPE_CLASSES if c not in HELD_OUT_CLASSES)
"""Classes the shipped model was trained on."""

# Object radius as a fraction of the image side. Every shape fits in the unit disc of its local
# frame, so the radius bounds the painted pixels, which makes non-overlap checkable on centres.
_SCALE_RANGE = (0.11, 0.19)
_MIN_CONTRAST = 0.45  # minimum RGB distance between an object and the background under it


def _star(points: int, outer: float, inner: float) -> list[tuple[float, float]]:
    verts = []
    for i in range(2 * points):
        r = outer if i % 2 == 0 else inner
        a = math.pi / 2 + i * math.pi / points
        verts.append((r * math.cos(a), r * math.sin(a)))
    return verts


def _fit_unit(verts: list[tuple[float, float]], radius: float = 0.98) -> list[tuple[float, float]]:
    # Centre the bounding box and scale so the farthest vertex lies at `radius`.
    xs, ys = [v[0] for v in verts], [v[1] for v in verts]
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    moved = [(x - cx, y - cy) for x, y in verts]
    far = max(math.hypot(x, y) for x, y in moved)
    return [(x * radius / far, y * radius / far) for x, y in moved]


_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": _fit_unit([(-1, -1), (1, -1), (1, 1), (-1, 1)], 0.95),
    "triangle": _star(3, 1.0, 0.5),
    "star": _fit_unit(_star(5, 1.0, 0.42)),
    "cross": _fit_unit(
        [
            (-0.3, -1),
            (0.3, -1),
            (0.3, -0.3),
            (1, -0.3),
            (1, 0.3),
            (0.3, 0.3),
            (0.3, 1),
            (-0.3, 1),
            (-0.3, 0.3),
            (-1, 0.3),
            (-1, -0.3),
            (-0.3, -0.3),
        ]
    ),
    "diamond": _fit_unit([(0, -1), (0.5, 0), (0, 1), (-0.5, 0)]),
    "arrow": _fit_unit(
        [(-1, -0.2), (0.15, -0.2), (0.15, -0.6), (1, 0), (0.15, 0.6), (0.15, 0.2), (-1, 0.2)]
    ),
    "L": _fit_unit(
        [(-0.6, -0.9), (0.6, -0.9), (0.6, -0.45), (-0.15, -0.45), (-0.15, 0.9), (-0.6, 0.9)]
    ),
    "T": _fit_unit(
        [
            (-0.8, 0.85),
            (0.8, 0.85),
            (0.8, 0.4),
            (0.22, 0.4),
            (0.22, -0.85),
            (-0.22, -0.85),
            (-0.22, 0.4),
            (-0.8, 0.4),
        ]
    ),
    "hourglass": _fit_unit(
        [(-0.7, 0.9), (0.7, 0.9), (0.12, 0), (0.7, -0.9), (-0.7, -0.9), (-0.12, 0)]
    ),
}


def _in_polygon(u: Tensor, v: Tensor, verts: list[tuple[float, float]]) -> Tensor:
    # Even-odd crossing test, vectorised over every pixel of every object at once.
    inside = torch.zeros(u.shape, dtype=torch.bool)
    for i, (x1, y1) in enumerate(verts):
        x2, y2 = verts[(i + 1) % len(verts)]
        if y1 == y2:
            continue
        crosses = (v < y1) != (v < y2)
        x_cut = x1 + (v - y1) * ((x2 - x1) / (y2 - y1))
        inside ^= crosses & (u < x_cut)
    return inside


def _inside(name: str, u: Tensor, v: Tensor) -> Tensor:
    """Boolean occupancy of shape ``name`` at local coordinates ``(u, v)`` (unit-disc frame)."""
    if name in _POLYGONS:
        return _in_polygon(u, v, _POLYGONS[name])
    r2 = u * u + v * v
    if name == "circle":
        return r2 <= 0.85**2
    if name == "ring":
        return (r2 <= 0.95**2) & (r2 >= 0.55**2)
    if name == "crescent":
        return (r2 <= 0.95**2) & ((u - 0.45) ** 2 + v * v > 0.75**2)
    raise KeyError(name)


def _rand(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(shape, generator=g)


def _place(radius: Tensor, objects: int, size: int, g: torch.Generator, tries: int = 48) -> Tensor:
    """Centres (N, objects, 2) keeping every object inside the image and objects disjoint."""
    n = radius.shape[0]
    low, span = radius, size - 2 * radius

    def draw() -> Tensor:
        return low.unsqueeze(-1) + span.unsqueeze(-1) * _rand(g, n, objects, 2)

    centres = draw()
    if objects == 1:
        return centres
    margin = 2.0  # pixels between the bounding discs, so masks never touch
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(tries):
        dist = (centres[:, 0] - centres[:, 1]).norm(dim=-1)
        done |= dist > radius[:, 0] + radius[:, 1] + margin
        if bool(done.all()):
            break
        centres = torch.where(done[:, None, None], centres, draw())
    # Rare leftovers go to opposite corners, which are always far enough apart.
    corners = torch.stack([low[:, 0:1].expand(n, 2), size - low[:, 1:2].expand(n, 2)], dim=1)
    return torch.where(done[:, None, None], centres, corners)


def _background(
    n: int, size: int, g: torch.Generator, yy: Tensor, xx: Tensor, clutter: float
) -> Tensor:
    """Clutter: smooth colour noise, stripes and soft gaussian blobs (no hard-edged shapes)."""
    img = 0.25 + 0.5 * _rand(g, n, 3, 1, 1)
    coarse = _rand(g, n, 3, 5, 5) - 0.5
    img = img + clutter * 0.5 * F.interpolate(
        coarse, size=(size, size), mode="bicubic", align_corners=False
    )

    angle = math.pi * _rand(g, n, 1, 1, 1)
    period = size * (0.08 + 0.14 * _rand(g, n, 1, 1, 1))
    phase = 2 * math.pi * _rand(g, n, 1, 1, 1)
    amp = 0.2 * _rand(g, n, 1, 1, 1) * (_rand(g, n, 1, 1, 1) < 0.6)
    tint = 2 * _rand(g, n, 3, 1, 1) - 1
    wave = torch.sin(2 * math.pi * (xx * angle.cos() + yy * angle.sin()) / period + phase)
    img = img + clutter * amp * tint * wave

    blobs = 5
    bc = size * _rand(g, n, blobs, 2)
    sig = size * (0.03 + 0.1 * _rand(g, n, blobs, 2))
    rot = math.pi * _rand(g, n, blobs)
    colour = _rand(g, n, blobs, 3)
    alpha = 0.7 * _rand(g, n, blobs)
    for b in range(blobs):
        dx = xx - bc[:, b, 0].view(n, 1, 1, 1)
        dy = yy - bc[:, b, 1].view(n, 1, 1, 1)
        c, s = rot[:, b].cos().view(n, 1, 1, 1), rot[:, b].sin().view(n, 1, 1, 1)
        a = (c * dx + s * dy) / sig[:, b, 0].view(n, 1, 1, 1)
        d = (-s * dx + c * dy) / sig[:, b, 1].view(n, 1, 1, 1)
        weight = clutter * alpha[:, b].view(n, 1, 1, 1) * torch.exp(-0.5 * (a * a + d * d))
        img = img * (1 - weight) + weight * colour[:, b].view(n, 3, 1, 1)

    img = img + clutter * 0.04 * torch.randn(img.shape, generator=g)
    return img.clamp(0.0, 1.0)


class ShapesBatch(NamedTuple):
    """A batch of the shapes world.

    Attributes:
        images (Tensor): ``(N, 3, H, W)`` float32 images with values in ``[0, 1]``.
        labels (Tensor): ``(N, objects)`` long class indices into :data:`SHAPE_CLASSES`.
        masks (Tensor): ``(N, objects, H, W)`` bool, exactly the pixels each object covers.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor


def make_shapes(
    n: int,
    *,
    objects: int = 1,
    seed: int = 0,
    image_size: int = 64,
    classes: Sequence[int | str] | None = None,
    clutter: float = 1.0,
) -> ShapesBatch:
    r"""Draws a batch of the shapes world: one or two shapes on a cluttered background.

    The class of an object is decided by its geometry only: colour, size (radius 11% to 19% of
    the image side), position and rotation are drawn independently of it. With ``objects=2`` the
    two objects are of different classes and never overlap or touch. Everything is drawn from a
    ``torch.Generator`` seeded with ``seed``, so a seed always gives the same batch (on CPU).

    Args:
        n (int): Number of images.
        objects (int, optional): Objects per image, 1 or 2.
                    Default: 1
        seed (int, optional): Seed of the batch.
                    Default: 0
        image_size (int, optional): Side of the square images in pixels (at least 32).
                    Default: 64
        classes (Sequence of int or str, optional): Restrict the drawn classes to these
                    (indices into :data:`SHAPE_CLASSES` or names). Labels still index
                    :data:`SHAPE_CLASSES`. ``None`` draws from all classes.
                    Default: None
        clutter (float, optional): Strength of the background clutter in ``[0, 1]``; 0 gives
                    a flat background. The random draws do not depend on it, so a seed gives
                    the same objects at every strength.
                    Default: 1.0

    Returns:
        ShapesBatch: ``images`` ``(n, 3, S, S)`` float32 in ``[0, 1]``, ``labels``
        ``(n, objects)`` long, ``masks`` ``(n, objects, S, S)`` bool, with ``S = image_size``.

    Examples::

        >>> from captum_fam.zoo import SHAPE_CLASSES, make_shapes
        >>> batch = make_shapes(8, objects=2, seed=1)
        >>> batch.images.shape, batch.labels.shape, batch.masks.shape
        (torch.Size([8, 3, 64, 64]), torch.Size([8, 2]), torch.Size([8, 2, 64, 64]))
        >>> names = [[SHAPE_CLASSES[i] for i in row] for row in batch.labels.tolist()]
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if objects not in (1, 2):
        raise ValueError(f"objects must be 1 or 2, got {objects!r}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")
    if not 0.0 <= float(clutter) <= 1.0:
        raise ValueError(f"clutter must be in [0, 1], got {clutter!r}")
    pool = _class_pool(classes)
    if len(pool) < objects:
        raise ValueError(f"classes must hold at least {objects} distinct classes, got {pool}")

    g = torch.Generator().manual_seed(int(seed))
    size = image_size
    # Distinct classes per image: the first `objects` entries of a random permutation of the pool.
    order = _rand(g, n, len(pool)).argsort(dim=1)[:, :objects]
    labels = torch.tensor(pool, dtype=torch.long)[order]

    lo, hi = _SCALE_RANGE
    radius = size * (lo + (hi - lo) * _rand(g, n, objects))
    theta = 2 * math.pi * _rand(g, n, objects)
    centres = _place(radius, objects, size, g)
    colour = _rand(g, n, objects, 3)

    coords = torch.arange(size, dtype=torch.float32) + 0.5
    yy = coords.view(1, 1, size, 1)
    xx = coords.view(1, 1, 1, size)
    background = _background(n, size, g, yy, xx, float(clutter))

    # Local frame of each object: translate, rotate by -theta, divide by radius.
    dx = xx - centres[..., 0, None, None]
    dy = yy - centres[..., 1, None, None]
    cos, sin = theta.cos()[..., None, None], theta.sin()[..., None, None]
    u = (cos * dx + sin * dy) / radius[..., None, None]
    v = (-sin * dx + cos * dy) / radius[..., None, None]
    masks = torch.zeros((n, objects, size, size), dtype=torch.bool)
    for index, name in enumerate(SHAPE_CLASSES):
        sel = labels == index
        if bool(sel.any()):
            masks[sel] = _inside(name, u[sel], v[sel])

    # Keep each object visible: push its colour away from the mean background under it.
    area = masks.sum(dim=(-2, -1)).clamp_min(1).unsqueeze(-1)
    under = torch.einsum("nohw,nchw->noc", masks.float(), background) / area
    diff = colour - under
    dist = diff.norm(dim=-1, keepdim=True)
    pushed = under + diff / dist.clamp_min(1e-6) * _MIN_CONTRAST
    colour = torch.where(dist < _MIN_CONTRAST, pushed, colour).clamp(0.0, 1.0)

    images = background
    for k in range(objects):
        m = masks[:, k].unsqueeze(1)
        images = torch.where(m, colour[:, k, :, None, None], images)
    return ShapesBatch(images.contiguous(), labels, masks)


def _class_pool(classes: Sequence[int | str] | None) -> list[int]:
    if classes is None:
        return list(range(len(SHAPE_CLASSES)))
    pool: list[int] = []
    for c in classes:
        if isinstance(c, str):
            if c not in SHAPE_CLASSES:
                raise ValueError(f"unknown shape class {c!r}; expected one of {SHAPE_CLASSES}")
            idx = SHAPE_CLASSES.index(c)
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(SHAPE_CLASSES):
            idx = c
        else:
            raise ValueError(f"classes entries must be names or indices < {len(SHAPE_CLASSES)}")
        if idx not in pool:
            pool.append(idx)
    return pool
