"""Embedded default world: a procedural shapes dataset and a small embedding CNN trained on it."""

from captum_fam.zoo.shapes import (
    HELD_OUT_CLASSES,
    SEEN_CLASSES,
    SHAPE_CLASSES,
    ShapesBatch,
    make_shapes,
)

__all__ = [
    "HELD_OUT_CLASSES",
    "SEEN_CLASSES",
    "SHAPE_CLASSES",
    "ShapesBatch",
    "make_shapes",
]
