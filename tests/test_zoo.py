"""Tests of the embedded default world (captum_fam.zoo): the shapes generator and shipped model."""

from __future__ import annotations

import shutil

import pytest
import torch

from captum_fam.zoo import (
    HELD_OUT_CLASSES,
    SEEN_CLASSES,
    SHAPE_CLASSES,
    ShapesBatch,
    ShapesEmbeddingNet,
    ShapesProjectionNet,
    load_shapes_head_model,
    load_shapes_model,
    make_shapes,
)
from captum_fam.zoo.evaluate import (
    class_pool,
    embed,
    few_shot_accuracy,
    pointing_rate,
    prototypes,
    top2_rate,
)
from captum_fam.zoo.model import (
    HEAD_WEIGHTS_PATH,
    HEAD_WEIGHTS_SHA256,
    WEIGHTS_PATH,
    WEIGHTS_SHA256,
    sha256_of_file,
)

# Figures of docs/model_card.md (python -m captum_fam.zoo.evaluate) and the tolerance the
# smaller test run (fewer episodes, other seeds) is held to.
CARD_ALL_5WAY_1SHOT = 0.861
CARD_TWO_OBJECT_TOP2 = 0.422
CARD_TWO_OBJECT_TOP2_SEEN = 0.828
# The model with a projection head (python -m captum_fam.zoo.evaluate --model head).
CARD_HEAD_ALL_5WAY_1SHOT = 0.840
CARD_HEAD_POINTING_OUTPUT = (0.918, 0.878)  # embedding="output", "reference", plain
TOLERANCE = 0.05
TEST_SEED = 3_000_000_000  # far from training seeds (< 10**9) and from the card's seed


@pytest.fixture(scope="module")
def model_and_layer():
    torch.set_num_threads(2)
    return load_shapes_model()


@pytest.fixture(scope="module")
def head_model_and_layer():
    torch.set_num_threads(2)
    return load_shapes_head_model()


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


def test_shipped_model_loads_offline(model_and_layer):
    model, layer = model_and_layer
    assert isinstance(model, ShapesEmbeddingNet)
    assert not model.training
    assert layer is model.block4
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            emb = model(make_shapes(3, seed=0).images)
    finally:
        handle.remove()
    assert emb.shape == (3, 128)
    assert captured[0].shape == (3, 128, 8, 8)
    assert (captured[0] >= 0).all()
    torch.testing.assert_close(captured[0].mean(dim=(2, 3)), emb)


def test_tampered_weights_raise(tmp_path):
    tampered = tmp_path / "shapes_cnn.pt"
    shutil.copy(WEIGHTS_PATH, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_model(path=tampered, sha256=WEIGHTS_SHA256)
    with pytest.raises(FileNotFoundError):
        load_shapes_model(path=tmp_path / "missing.pt")


def test_few_shot_accuracy_matches_model_card(model_and_layer):
    model, _ = model_and_layer
    images, labels = class_pool(25, seed=TEST_SEED)
    emb = embed(model, images)
    acc, _ = few_shot_accuracy(
        emb, labels, ways=5, shots=1, classes=range(len(SHAPE_CLASSES)), episodes=200
    )
    assert acc >= CARD_ALL_5WAY_1SHOT - TOLERANCE


def test_two_object_scenes_rank_both_objects_first(model_and_layer):
    model, _ = model_and_layer
    sup_images, sup_labels = class_pool(10, seed=TEST_SEED + 1000)
    protos = prototypes(embed(model, sup_images), sup_labels, len(SHAPE_CLASSES))
    scenes = make_shapes(150, objects=2, seed=TEST_SEED + 2000)
    rate = top2_rate(embed(model, scenes.images), scenes.labels, protos)
    assert rate >= CARD_TWO_OBJECT_TOP2 - 2 * TOLERANCE
    # Among the classes it was trained on, the model represents both objects of a scene.
    seen = [SHAPE_CLASSES.index(c) for c in SEEN_CLASSES]
    trained = make_shapes(150, objects=2, seed=TEST_SEED + 3000, classes=seen)
    rate = top2_rate(embed(model, trained.images), trained.labels, protos, classes=seen)
    assert rate >= max(0.8, CARD_TWO_OBJECT_TOP2_SEEN - TOLERANCE)


def test_shipped_weights_match_their_digests():
    assert sha256_of_file(WEIGHTS_PATH) == WEIGHTS_SHA256
    assert sha256_of_file(HEAD_WEIGHTS_PATH) == HEAD_WEIGHTS_SHA256


def test_head_model_loads_offline(head_model_and_layer):
    model, layer = head_model_and_layer
    assert isinstance(model, ShapesProjectionNet)
    assert not model.training
    assert layer is model.block4
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            emb = model(make_shapes(3, seed=0).images)
    finally:
        handle.remove()
    assert emb.shape == (3, 64)
    assert captured[0].shape == (3, 128, 8, 8)
    assert (captured[0] >= 0).all()
    # The compared embedding is the head's output, not the pooled layer.
    with torch.no_grad():
        torch.testing.assert_close(model.head(captured[0].mean(dim=(2, 3))), emb)


def test_head_loader_checks_the_digest(tmp_path):
    copy = tmp_path / "shapes_head_cnn.pt"
    shutil.copy(HEAD_WEIGHTS_PATH, copy)
    model, _ = load_shapes_head_model(path=copy)  # a faithful copy loads
    assert isinstance(model, ShapesProjectionNet)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_head_model(path=copy)
    # Each loader holds its own digest: the other model's file is refused.
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_head_model(path=WEIGHTS_PATH)
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_model(path=HEAD_WEIGHTS_PATH)
    with pytest.raises(FileNotFoundError):
        load_shapes_head_model(path=tmp_path / "missing.pt")


def test_head_model_few_shot_accuracy_matches_model_card(head_model_and_layer):
    model, _ = head_model_and_layer
    images, labels = class_pool(25, seed=TEST_SEED)
    emb = embed(model, images)
    acc, _ = few_shot_accuracy(
        emb, labels, ways=5, shots=1, classes=range(len(SHAPE_CLASSES)), episodes=200
    )
    assert acc >= CARD_HEAD_ALL_5WAY_1SHOT - TOLERANCE


def test_head_model_output_maps_point_into_the_named_object(head_model_and_layer):
    """FAM on the head's output, prototypes of the head's output: pointing on 100 scenes."""
    model, layer = head_model_and_layer
    sup_images, sup_labels = class_pool(10, seed=TEST_SEED + 1000)
    protos = prototypes(embed(model, sup_images), sup_labels, len(SHAPE_CLASSES))
    scenes = make_shapes(100, objects=2, seed=TEST_SEED + 2000)
    for k in range(2):
        rate = pointing_rate(
            model,
            layer,
            scenes.images,
            scenes.masks[:, k],
            protos[scenes.labels[:, k]],
            embedding="output",
        )
        assert rate >= CARD_HEAD_POINTING_OUTPUT[k] - 2 * TOLERANCE, (k, rate)
