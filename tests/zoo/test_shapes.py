"""The shapes world: images, masks and labels, drawn in torch, seeded."""

from __future__ import annotations

import pytest
import torch

from captum_fam.zoo import (
    HELD_OUT_CLASSES,
    SHAPE_CLASSES,
    ShapesBatch,
    make_shapes,
)


@pytest.mark.parametrize("objects", [1, 2])
def test_make_shapes_shapes_and_dtypes(objects):
    batch = make_shapes(5, objects=objects, seed=1, image_size=48)
    assert isinstance(batch, ShapesBatch)
    assert batch.images.shape == (5, 3, 48, 48) and batch.images.dtype == torch.float32
    assert batch.labels.shape == (5, objects) and batch.labels.dtype == torch.long
    assert batch.masks.shape == (5, objects, 48, 48) and batch.masks.dtype == torch.bool
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    assert ((batch.labels >= 0) & (batch.labels < len(SHAPE_CLASSES))).all()


def test_make_shapes_deterministic_per_seed():
    a, b = make_shapes(6, objects=2, seed=7), make_shapes(6, objects=2, seed=7)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    c = make_shapes(6, objects=2, seed=8)
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.masks, c.masks)


def test_masks_are_exact_and_objects_distinct():
    batch = make_shapes(64, objects=2, seed=3)
    area = batch.masks.sum(dim=(-2, -1))
    assert (area > 0).all()
    assert not (batch.masks[:, 0] & batch.masks[:, 1]).any()
    assert (batch.labels[:, 0] != batch.labels[:, 1]).all()
    # Every painted pixel carries the object's flat colour, so a mask is exactly its pixels.
    for i in range(len(batch.images)):
        for k in range(2):
            pixels = batch.images[i][:, batch.masks[i, k]]
            assert torch.equal(pixels, pixels[:, :1].expand_as(pixels))


def test_every_class_is_drawn_and_class_filter():
    batch = make_shapes(200, seed=0)
    assert set(batch.labels.flatten().tolist()) == set(range(len(SHAPE_CLASSES)))
    only = make_shapes(20, objects=2, seed=0, classes=["circle", "square"])
    assert set(only.labels.flatten().tolist()) == {0, 1}
    assert len(SHAPE_CLASSES) >= 8 and set(HELD_OUT_CLASSES) < set(SHAPE_CLASSES)


@pytest.mark.parametrize(
    "kwargs",
    [{"objects": 3}, {"image_size": 8}, {"classes": ["blob"]}, {"classes": [0], "objects": 2}],
)
def test_make_shapes_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_shapes(2, **kwargs)
