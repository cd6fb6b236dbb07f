"""Embedded default world: a procedural shapes dataset and a small embedding CNN trained on it.

The model takes images in ``[0, 1]`` directly (it standardises inside), so the output of
:func:`make_shapes` can be fed as is. Everything runs offline: the weights ship in the package.

Examples::

    >>> from captum_fam.zoo import load_shapes_model, make_shapes
    >>> model, layer = load_shapes_model()
    >>> batch = make_shapes(4, objects=2, seed=0)
    >>> model(batch.images).shape
    torch.Size([4, 128])
"""

from captum_fam.zoo.common_mode import CommonModeNet, load_common_mode_model
from captum_fam.zoo.model import WEIGHTS_SHA256, ShapesEmbeddingNet, load_shapes_model
from captum_fam.zoo.shapes import (
    HELD_OUT_CLASSES,
    SEEN_CLASSES,
    SHAPE_CLASSES,
    ShapesBatch,
    make_shapes,
)

__all__ = [
    "CommonModeNet",
    "HELD_OUT_CLASSES",
    "WEIGHTS_SHA256",
    "ShapesEmbeddingNet",
    "load_common_mode_model",
    "load_shapes_model",
    "SEEN_CLASSES",
    "SHAPE_CLASSES",
    "ShapesBatch",
    "make_shapes",
]
