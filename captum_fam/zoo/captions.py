"""Captions of the shapes world: short, varied sentences that name the objects of a scene.

A caption names every object it is given by its class word ("star", "L"), with an article, in a
random template and a random object order ("a star next to a triangle", "there is a triangle and
a star shape"). When an object's flat colour lies close to a corner of the RGB cube, the caption
may also name that colour ("a red star"). Everything random is drawn from a ``torch.Generator``
seeded by the caller, so a seed always gives the same captions.

Every word a caption can hold is in :data:`CAPTION_WORDS`, the vocabulary of the shapes CLIP's
tokenizer (:class:`captum_fam.zoo.tokenizer.WordTokenizer`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from captum_fam.zoo.shapes import SHAPE_CLASSES, ShapesBatch

__all__ = [
    "CAPTION_WORDS",
    "COLOUR_NAMES",
    "caption_classes",
    "caption_matches",
    "colour_names",
    "make_captions",
    "named_matches",
    "parse_caption",
    "scene_contents",
]

COLOUR_NAMES: tuple[str, ...] = (
    "black",
    "blue",
    "green",
    "cyan",
    "red",
    "magenta",
    "yellow",
    "white",
)
"""Coarse colour words: the corners of the RGB cube, indexed by ``4 * r + 2 * g + b``."""

_COLOUR_RADIUS = 0.35  # an object's colour is named only within this RGB distance of a corner

# Templates: "{0}" and "{1}" stand for noun phrases ("a star", "a red star shape").
_SINGLE_TEMPLATES: tuple[str, ...] = (
    "{0}",
    "a picture of {0}",
    "an image of {0}",
    "a drawing of {0}",
    "there is {0}",
    "{0} on a cluttered background",
    "{0} in the picture",
)
_PAIR_TEMPLATES: tuple[str, ...] = (
    "{0} and {1}",
    "{0} next to {1}",
    "{0} beside {1}",
    "{0} near {1}",
    "{0} with {1}",
    "a picture of {0} and {1}",
    "there is {0} and {1}",
    "{0} and {1} on a cluttered background",
)
# Class words read with a leading vowel sound take "an" ("an arrow", "an L", "an hourglass").
_VOWEL_SOUND = frozenset({"arrow", "L", "hourglass"})
_SHAPE_WORD_RATE = 0.25  # share of noun phrases ending in "shape" ("a star shape")
_ONE_RATE = 0.15  # share of noun phrases with "one" instead of "a"/"an"


def _words() -> tuple[str, ...]:
    words = {"a", "an", "one", "shape"}
    for template in _SINGLE_TEMPLATES + _PAIR_TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    words.update(c.lower() for c in SHAPE_CLASSES)
    words.update(COLOUR_NAMES)
    return tuple(sorted(words))


CAPTION_WORDS: tuple[str, ...] = _words()
"""Every word a caption can hold, lower-cased and sorted (class words included, held-out ones
too): the vocabulary of :class:`~captum_fam.zoo.tokenizer.WordTokenizer` after its special
tokens."""


def colour_names(batch: ShapesBatch, *, unambiguous: bool = True) -> list[list[str | None]]:
    r"""Coarse colour word of every object of ``batch``.

    An object's colour is its flat colour (the value of any pixel of its mask). Its name is the
    nearest corner of the RGB cube (:data:`COLOUR_NAMES`).

    Args:
        batch (ShapesBatch): Output of :func:`~captum_fam.zoo.make_shapes`.
        unambiguous (bool, optional): Name a colour only when it lies within RGB distance 0.35
                    of its corner, and give ``None`` otherwise; ``False`` names every colour by
                    its nearest corner.
                    Default: True

    Returns:
        list[list[str or None]]: ``names[i][k]`` for object ``k`` of image ``i``.

    Examples::

        >>> from captum_fam.zoo import make_shapes
        >>> from captum_fam.zoo.captions import colour_names
        >>> names = colour_names(make_shapes(4, objects=2, seed=0))
        >>> len(names), len(names[0])
        (4, 2)
    """
    colours = _object_colours(batch)
    corner = (colours > 0.5).long()
    index = corner[..., 0] * 4 + corner[..., 1] * 2 + corner[..., 2]
    distance = (colours - corner.to(colours.dtype)).norm(dim=-1)
    named = (
        distance <= _COLOUR_RADIUS if unambiguous else torch.ones_like(distance, dtype=torch.bool)
    )
    return [
        [COLOUR_NAMES[i] if ok else None for i, ok in zip(row_i, row_ok, strict=True)]
        for row_i, row_ok in zip(index.tolist(), named.tolist(), strict=True)
    ]


def _object_colours(batch: ShapesBatch) -> Tensor:
    """``(N, objects, 3)`` flat colour of each object (the mean over its mask, all equal)."""
    masks = batch.masks.to(batch.images.dtype)
    area = masks.sum(dim=(-2, -1)).clamp_min(1).unsqueeze(-1)
    return torch.einsum("nohw,nchw->noc", masks, batch.images) / area


def make_captions(batch: ShapesBatch, *, seed: int = 0, colour_rate: float = 0.5) -> list[str]:
    r"""One caption per image of ``batch``, naming all of its objects.

    Args:
        batch (ShapesBatch): Output of :func:`~captum_fam.zoo.make_shapes` (one or two
                    objects per image).
        seed (int, optional): Seed of the template, word order and filler choices.
                    Default: 0
        colour_rate (float, optional): Probability that an object whose colour is
                    unambiguous (see :func:`colour_names`) is named with its colour word.
                    0 gives shape words only.
                    Default: 0.5

    Returns:
        list[str]: ``len(batch.images)`` captions.

    Examples::

        >>> from captum_fam.zoo import make_captions, make_shapes
        >>> batch = make_shapes(3, objects=2, seed=0)
        >>> captions = make_captions(batch, seed=0)
        >>> len(captions)
        3
    """
    if not isinstance(batch, ShapesBatch):
        raise TypeError(f"batch must be a ShapesBatch (make_shapes output); got {type(batch)}")
    classes = batch.labels.tolist()
    colours = colour_names(batch) if colour_rate > 0 else None
    return caption_classes(classes, seed=seed, colours=colours, colour_rate=colour_rate)


def caption_classes(
    classes: Sequence[Sequence[int | str]],
    *,
    seed: int = 0,
    colours: Sequence[Sequence[str | None]] | None = None,
    colour_rate: float = 0.5,
) -> list[str]:
    r"""One caption per list of classes, naming each class once (in a random order).

    The classes need not be in any image: use this for foil captions ("a star and a triangle"
    for an image of a star) or for text queries.

    Args:
        classes (Sequence of Sequence of int or str): For each caption, the one or two classes
                    to name, as indices into :data:`~captum_fam.zoo.SHAPE_CLASSES` or names.
        seed (int, optional): Seed of the template, word order and filler choices.
                    Default: 0
        colours (Sequence of Sequence of str or None, optional): Colour word of each class
                    (from :data:`COLOUR_NAMES`, or None for none), laid out like ``classes``.
                    Default: None (no colour words)
        colour_rate (float, optional): Probability that a given colour word is used.
                    Default: 0.5

    Returns:
        list[str]: ``len(classes)`` captions.

    Examples::

        >>> from captum_fam.zoo.captions import caption_classes
        >>> len(caption_classes([["star"], ["star", "triangle"]], seed=1))
        2
        >>> caption_classes([[3]], colours=[["red"]], colour_rate=1.0, seed=0)[0].count("red")
        1
    """
    if not 0.0 <= float(colour_rate) <= 1.0:
        raise ValueError(f"colour_rate must be in [0, 1]; got {colour_rate!r}")
    names = [[_class_name(c) for c in row] for row in classes]
    for row in names:
        if len(row) not in (1, 2) or len(set(row)) != len(row):
            raise ValueError(f"classes: each caption names 1 or 2 distinct classes; got {row}")
    if colours is not None:
        if len(colours) != len(names) or any(
            len(c) != len(r) for c, r in zip(colours, names, strict=True)
        ):
            raise ValueError("colours must hold one entry per class of classes")
        for colour_row in colours:
            for named in colour_row:
                if named is not None and named not in COLOUR_NAMES:
                    raise ValueError(f"colours entries must be in {COLOUR_NAMES} or None")

    g = torch.Generator().manual_seed(int(seed))
    captions = []
    for i, row in enumerate(names):
        # A fixed number of draws per caption, so a caption depends only on the seed and i.
        u = torch.rand(8, generator=g).tolist()
        order = [0, 1] if len(row) == 1 or u[0] < 0.5 else [1, 0]
        phrases = []
        for slot, k in enumerate(order[: len(row)]):
            colour = colours[i][k] if colours is not None else None
            use_colour = colour is not None and u[1 + slot] < colour_rate
            phrases.append(
                _noun_phrase(row[k], colour if use_colour else None, u[3 + slot], u[5 + slot])
            )
        templates = _SINGLE_TEMPLATES if len(row) == 1 else _PAIR_TEMPLATES
        template = templates[min(int(u[7] * len(templates)), len(templates) - 1)]
        captions.append(template.format(*phrases))
    return captions


def _noun_phrase(name: str, colour: str | None, u_article: float, u_shape: float) -> str:
    first = colour if colour is not None else name
    article = "one" if u_article < _ONE_RATE else "an" if first in _VOWEL_SOUND else "a"
    words = [article] + ([colour] if colour is not None else []) + [name]
    if u_shape < _SHAPE_WORD_RATE:
        words.append("shape")
    return " ".join(words)


def _class_name(c: int | str) -> str:
    if isinstance(c, str):
        if c not in SHAPE_CLASSES:
            raise ValueError(f"classes: unknown shape class {c!r}; expected one of {SHAPE_CLASSES}")
        return c
    if isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(SHAPE_CLASSES):
        return SHAPE_CLASSES[c]
    raise ValueError(f"classes entries must be names or indices < {len(SHAPE_CLASSES)}; got {c!r}")


def parse_caption(text: str) -> tuple[tuple[int, str | None], ...]:
    r"""What a caption of this module states: its classes, each with its colour word if any.

    Reads the words left to right; a colour word applies to the next class word.

    Args:
        text (str): A caption (any case; words are separated by spaces).

    Returns:
        tuple[tuple[int, str or None], ...]: ``(class index, colour or None)`` in the order
        the caption names them.

    Examples::

        >>> from captum_fam.zoo.captions import parse_caption
        >>> parse_caption("a red star next to an L shape")
        ((3, 'red'), (9, None))
    """
    lower = [c.lower() for c in SHAPE_CLASSES]
    found: list[tuple[int, str | None]] = []
    colour: str | None = None
    for word in text.lower().split():
        if word in COLOUR_NAMES:
            colour = word
        elif word in lower:
            found.append((lower.index(word), colour))
            colour = None
    return tuple(found)


def scene_contents(batch: ShapesBatch) -> list[dict[int, str]]:
    r"""What each image of ``batch`` holds: class index to the object's nearest colour word.

    Args:
        batch (ShapesBatch): Output of :func:`~captum_fam.zoo.make_shapes`.

    Returns:
        list[dict[int, str]]: One dict per image, ``{class index: colour word}``.
    """
    colours = colour_names(batch, unambiguous=False)  # every colour named: no None
    return [
        {label: str(name) for label, name in zip(row, names, strict=True)}
        for row, names in zip(batch.labels.tolist(), colours, strict=True)
    ]


def caption_matches(text: str, scene: dict[int, str], *, partial: bool = False) -> bool:
    r"""Whether a caption describes a scene: it names exactly the scene's classes (or, with
    ``partial=True``, some of them), and every colour word it uses is the nearest colour word
    of that object.

    Args:
        text (str): A caption (see :func:`parse_caption`).
        scene (dict[int, str]): An entry of :func:`scene_contents`.
        partial (bool, optional): Also accept a caption that names only some of the scene's
                    objects (at least one). Default: False

    Returns:
        bool

    Examples::

        >>> from captum_fam.zoo.captions import caption_matches
        >>> caption_matches("a red star next to a ring", {3: "red", 5: "blue"})
        True
        >>> caption_matches("a star", {3: "red", 5: "blue"})
        False
        >>> caption_matches("a star", {3: "red", 5: "blue"}, partial=True)
        True
    """
    return named_matches(parse_caption(text), scene, partial=partial)


def named_matches(
    named: tuple[tuple[int, str | None], ...], scene: dict[int, str], *, partial: bool = False
) -> bool:
    """:func:`caption_matches` for a caption already read by :func:`parse_caption`."""
    classes = [c for c, _ in named]
    if partial:
        if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(scene):
            return False
    elif sorted(classes) != sorted(scene):
        return False
    return all(colour is None or scene[c] == colour for c, colour in named)
