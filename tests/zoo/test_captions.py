"""Tests of the shapes world's captions (captum_fam.zoo.captions)."""

from __future__ import annotations

import pytest
import torch

from captum_fam.zoo import SHAPE_CLASSES, make_shapes
from captum_fam.zoo.captions import (
    CAPTION_WORDS,
    COLOUR_NAMES,
    caption_classes,
    caption_matches,
    colour_names,
    make_captions,
    parse_caption,
    scene_contents,
)


@pytest.mark.parametrize("objects", [1, 2])
def test_captions_are_deterministic_and_name_every_object(objects):
    batch = make_shapes(30, objects=objects, seed=11)
    captions = make_captions(batch, seed=5)
    assert captions == make_captions(batch, seed=5)
    assert captions != make_captions(batch, seed=6)
    for caption, labels in zip(captions, batch.labels.tolist(), strict=True):
        named = [c for c, _ in parse_caption(caption)]
        assert sorted(named) == sorted(labels), caption


def test_captions_vary_order_and_templates():
    batch = make_shapes(100, objects=2, seed=3)
    captions = make_captions(batch, seed=0, colour_rate=0.0)
    first_named = [parse_caption(c)[0][0] for c in captions]
    in_label_order = sum(
        f == lab[0] for f, lab in zip(first_named, batch.labels.tolist(), strict=True)
    )
    assert 20 < in_label_order < 80  # both orders occur
    openings = {" ".join(c.split()[:2]) for c in captions}
    assert len(openings) > 10
    assert all(c.split()[0] in {"a", "an", "one", "there"} for c in captions)


def test_every_caption_word_is_in_the_vocabulary():
    batch = make_shapes(100, objects=2, seed=4)
    words = {w.lower() for c in make_captions(batch, seed=1, colour_rate=1.0) for w in c.split()}
    assert words <= set(CAPTION_WORDS)
    assert set(CAPTION_WORDS) >= {c.lower() for c in SHAPE_CLASSES} | set(COLOUR_NAMES)


def test_colour_words_name_the_object_colour():
    batch = make_shapes(150, objects=2, seed=9)
    names = colour_names(batch)
    everywhere = colour_names(batch, unambiguous=False)
    named = [n for row in names for n in row if n is not None]
    assert 0 < len(named) < 300  # only colours near a corner of the RGB cube get a word
    for row, full in zip(names, everywhere, strict=True):
        for name, nearest in zip(row, full, strict=True):
            assert name is None or name == nearest
    captions = make_captions(batch, seed=2, colour_rate=1.0)
    scenes = scene_contents(batch)
    for caption, row, scene in zip(captions, names, scenes, strict=True):
        stated = [colour for _, colour in parse_caption(caption) if colour is not None]
        assert sorted(stated) == sorted(n for n in row if n is not None)
        assert caption_matches(caption, scene)
    assert not any(
        w in COLOUR_NAMES for c in make_captions(batch, seed=2, colour_rate=0.0) for w in c.split()
    )


def test_a_pure_colour_gets_its_word():
    images = torch.zeros(1, 3, 8, 8)
    images[0, 0, 2:5, 2:5] = 1.0  # pure red square on black
    masks = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    masks[0, 0, 2:5, 2:5] = True
    from captum_fam.zoo import ShapesBatch

    assert colour_names(ShapesBatch(images, torch.tensor([[1]]), masks)) == [["red"]]


def test_caption_classes_for_foils_and_articles():
    captions = caption_classes([["star", "triangle"], [8], ["L"], ["hourglass"]], seed=0)
    assert [sorted(c for c, _ in parse_caption(x)) for x in captions] == [[2, 3], [8], [9], [11]]
    for caption in captions[1:]:
        assert caption.split()[caption.split().index(parse_word(caption)) - 1] in {"an", "one"}
    assert caption_classes([[3]], colours=[["red"]], colour_rate=1.0, seed=0)[0].count("red") == 1


def parse_word(caption: str) -> str:
    return next(w for w in caption.split() if w.lower() in {c.lower() for c in SHAPE_CLASSES})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"classes": [["blob"]]},
        {"classes": [[12]]},
        {"classes": [[1, 2, 3]]},
        {"classes": [[1, 1]]},
        {"classes": [[]]},
        {"classes": [[1]], "colours": [["mauve"]]},
        {"classes": [[1]], "colours": [["red", "blue"]]},
        {"classes": [[1]], "colour_rate": 1.5},
    ],
)
def test_caption_classes_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        caption_classes(**kwargs)


def test_make_captions_rejects_a_non_batch():
    with pytest.raises(TypeError, match="batch"):
        make_captions(torch.zeros(2, 3, 64, 64))


def test_caption_matches_exact_partial_and_colour():
    scene = {3: "red", 5: "blue"}
    assert caption_matches("a star beside a ring shape", scene)
    assert caption_matches("a red star and a ring", scene)
    assert not caption_matches("a blue star and a ring", scene)
    assert not caption_matches("a star", scene)
    assert caption_matches("a star", scene, partial=True)
    assert not caption_matches("a star and a circle", scene, partial=True)
    assert not caption_matches("a picture", scene, partial=True)
    assert parse_caption("An L next to a T") == ((9, None), (10, None))
