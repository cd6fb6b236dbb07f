"""Embedded default world: a procedural shapes dataset, two small embedding CNNs trained on it,
and a small CLIP (an image tower and a text tower) of the same world with its captions.

:func:`load_shapes_model` compares the pooled last block itself; :func:`load_shapes_head_model`
has the same trunk with a linear projection head whose output is the compared embedding, as in
most real embedding models (explain it with ``embedding="output"``). The models take images in
``[0, 1]`` directly (they standardise inside), so the output of :func:`make_shapes` can be fed as
is. Everything runs offline: the weights ship in the package.

Examples::

    >>> from captum_fam.zoo import load_shapes_model, make_shapes
    >>> model, layer = load_shapes_model()
    >>> batch = make_shapes(4, objects=2, seed=0)
    >>> model(batch.images).shape
    torch.Size([4, 128])
    >>> from captum_fam.zoo import load_shapes_clip, make_captions
    >>> clip = load_shapes_clip()
    >>> clip.similarity(batch.images, make_captions(batch, seed=0)).shape
    torch.Size([4, 4])
"""

from captum_fam.zoo.captions import caption_classes, make_captions
from captum_fam.zoo.clip import CLIP_WEIGHTS_SHA256, ShapesClip, load_shapes_clip
from captum_fam.zoo.common_mode import CommonModeNet, load_common_mode_model
from captum_fam.zoo.model import (
    HEAD_WEIGHTS_SHA256,
    WEIGHTS_SHA256,
    ShapesEmbeddingNet,
    ShapesProjectionNet,
    load_shapes_head_model,
    load_shapes_model,
)
from captum_fam.zoo.shapes import (
    HELD_OUT_CLASSES,
    SEEN_CLASSES,
    SHAPE_CLASSES,
    ShapesBatch,
    make_shapes,
)
from captum_fam.zoo.tokenizer import WordTokenizer

__all__ = [
    "CLIP_WEIGHTS_SHA256",
    "CommonModeNet",
    "HEAD_WEIGHTS_SHA256",
    "HELD_OUT_CLASSES",
    "WEIGHTS_SHA256",
    "ShapesEmbeddingNet",
    "ShapesClip",
    "ShapesProjectionNet",
    "WordTokenizer",
    "caption_classes",
    "load_common_mode_model",
    "load_shapes_clip",
    "load_shapes_head_model",
    "load_shapes_model",
    "SEEN_CLASSES",
    "SHAPE_CLASSES",
    "ShapesBatch",
    "make_captions",
    "make_shapes",
]
