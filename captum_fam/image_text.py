"""Image-text models (CLIP and its kin): FAM on both towers of one similarity.

An image-text model scores an image against a caption by the similarity (usually the cosine)
of two embeddings, one from each tower. FAM explains that score from either side: with the
caption's embedding as the reference, the image tower's map shows what in the image matches
the caption; with the image's embedding as the reference, the text tower's token map shows which
words of the caption the image supports. Each side is an ordinary
:class:`~captum_fam.FeatureActivationMap` (``embedding="output"``, so the score explained is
the model's own, after its projections); this module runs the two together:

- :func:`explain_image_text`: N image-caption pairs from both sides, one forward per tower;
- :func:`explain_text_to_image`: captions as queries against an image gallery (embedded once,
  or cached), the top-k images of each caption with the image maps for the caption and the
  caption's token maps for each image.

Text inputs are ``(input_ids, attention_mask)``; ``text_pooling_mask=1`` (the default) reads
the attention mask as the pooling mask, so padding is exactly 0 in token maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam._checks import TensorOrTuple, format_batch
from captum_fam._engine.references import plan_references
from captum_fam.attribution import FeatureActivationMap
from captum_fam.tasks import RetrievalExplanation, check_mask_index, retrieve

__all__ = ["ImageTextExplanation", "explain_image_text", "explain_text_to_image"]


@dataclass
class ImageTextExplanation:
    """N image-caption pairs explained from both sides."""

    image_maps: Tensor  # (N, 1, *S) what in each image matches its caption
    token_maps: Tensor  # (N, 1, T) which tokens of each caption the image supports
    scores: Tensor  # (N,) the similarity of each pair


@torch.no_grad()
def explain_image_text(
    image_fam: FeatureActivationMap,
    text_fam: FeatureActivationMap,
    images: TensorOrTuple,
    texts: TensorOrTuple,
    foil_texts: TensorOrTuple | None = None,
    foil_text_embeddings: Tensor | None = None,
    foil_images: TensorOrTuple | None = None,
    foil_image_embeddings: Tensor | None = None,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
    text_pooling_mask: int | None = 1,
    image_forward_args: Any = None,
    text_forward_args: Any = None,
) -> ImageTextExplanation:
    r"""Explain N image-caption pairs from both sides: what in image i matches caption i, and
    which tokens of caption i image i supports.

    Two forwards in all, one per tower (and one per foil set given as inputs). A foil caption
    makes the image map contrastive (why the image matches the caption rather than the foil
    caption: "a star" against "a triangle" lights the star, not what both share); a foil image
    makes the token map contrastive.

    Both FAMs must compare embeddings of one space with one similarity (the image FAM's
    similarity scores the pairs). Each map equals the corresponding ``attribute`` call:
    ``image_fam.attribute(images, reference_embeddings=text_fam.embed(texts, pooling_mask=1))``
    and ``text_fam.attribute(texts, reference_embeddings=image_fam.embed(images),
    pooling_mask=1)``.

    Args:
        image_fam (FeatureActivationMap): FAM on the image tower (e.g. its last convolutional
                    block, or a ViT block with ``token_layout="auto"``), ``embedding="output"``.
        text_fam (FeatureActivationMap): FAM on the text tower's token states
                    (``token_layout="sequence"``), ``embedding="output"``.
        images (Tensor or tuple[Tensor, ...]): N images, as the image tower takes them.
        texts (Tensor or tuple[Tensor, ...]): N captions, as the text tower takes them, usually
                    ``(input_ids, attention_mask)``.
        foil_texts (Tensor or tuple[Tensor, ...], optional): Foil captions (1 or N), like
                    ``texts``. Default: None
        foil_text_embeddings (Tensor, optional): Or their embeddings (1 or N rows).
                    Default: None
        foil_images (Tensor or tuple[Tensor, ...], optional): Foil images (1 or N) for the
                    token maps. Default: None
        foil_image_embeddings (Tensor, optional): Or their embeddings. Default: None
        relu_attributions (bool, optional): As in :meth:`FeatureActivationMap.attribute`, for
                    both sides. Pass False to see the words (and regions) that pull the score
                    down as negative values. Default: True
        normalize_weights (bool, optional): As in :meth:`FeatureActivationMap.attribute`.
                    Default: True
        text_pooling_mask (int, optional): Index of the pooling mask among the text inputs
                    (``1`` for ``(input_ids, attention_mask)``; None for a text tower that
                    pools every token). Default: 1
        image_forward_args (Any, optional): Passed to every image-tower forward. Default: None
        text_forward_args (Any, optional): Passed to every text-tower forward. Default: None

    Returns:
        :class:`ImageTextExplanation` with ``image_maps (N, 1, *S)``, ``token_maps (N, 1, T)``
        and ``scores (N,)``, on the images' device (the token maps on the texts').

    Examples::

        >>> from captum_fam import FeatureActivationMap
        >>> from captum_fam.image_text import explain_image_text
        >>> from captum_fam.zoo import load_shapes_clip, make_shapes
        >>> clip = load_shapes_clip()
        >>> image_fam = FeatureActivationMap(clip.image_tower, clip.image_layer)
        >>> text_fam = FeatureActivationMap(clip.text_tower, clip.text_layer,
        ...                                 token_layout="sequence")
        >>> images = make_shapes(2, objects=2, seed=0).images
        >>> texts = clip.tokenizer.encode(["a star", "a ring"])
        >>> result = explain_image_text(image_fam, text_fam, images, texts)
        >>> result.image_maps.shape, result.token_maps.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([2, 1, 2]))
    """
    image_engine, text_engine = _check_fams(image_fam, text_fam)
    check_mask_index(text_pooling_mask)
    image_batch, text_batch = format_batch(images, "images"), format_batch(texts, "texts")
    n = image_batch[0].shape[0]
    if text_batch[0].shape[0] != n:
        raise ValueError(
            f"images and texts must hold the same number of examples; got {n} and "
            f"{text_batch[0].shape[0]}"
        )
    foil_text_plan = plan_references(
        n, text_batch, foil_texts, foil_text_embeddings, "foil_text", required=False
    )
    foil_image_plan = plan_references(
        n, image_batch, foil_images, foil_image_embeddings, "foil_image", required=False
    )
    image_queries = image_engine.queries(image_batch, image_forward_args, False, None)
    text_queries = text_engine.queries(text_batch, text_forward_args, False, text_pooling_mask)
    image_embeddings, text_embeddings = image_queries.embeddings, text_queries.embeddings
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            f"the towers' embeddings must share one space; image_fam gives "
            f"{image_embeddings.shape[1]} channels and text_fam {text_embeddings.shape[1]}"
        )
    text_embeddings = text_embeddings.to(image_embeddings.device, image_embeddings.dtype)
    image_engine.similarity.validate(image_embeddings, text_embeddings)
    foil_text_rows = (
        None
        if foil_text_plan is None
        else text_engine.rows(
            foil_text_plan, image_embeddings, text_forward_args, False, text_pooling_mask
        ).to(image_embeddings.device, image_embeddings.dtype)
    )
    foil_image_rows = (
        None
        if foil_image_plan is None
        else image_engine.rows(foil_image_plan, text_embeddings, image_forward_args, False, None)
    )
    image_maps = image_engine.explain(
        image_queries, text_embeddings, foil_text_rows, None, relu_attributions,
        normalize_weights,
    )  # fmt: skip
    text_device = text_queries.embeddings.device
    token_maps = text_engine.explain(
        text_queries,
        image_embeddings.to(text_device, text_queries.embeddings.dtype),
        None if foil_image_rows is None else foil_image_rows.to(text_device),
        None,
        relu_attributions,
        normalize_weights,
    )
    return ImageTextExplanation(
        image_maps.to(image_batch[0].device),
        token_maps.to(text_batch[0].device),
        image_engine.scores(image_embeddings, text_embeddings).to(image_batch[0].device),
    )


@torch.no_grad()
def explain_text_to_image(
    text_fam: FeatureActivationMap,
    image_fam: FeatureActivationMap,
    texts: TensorOrTuple,
    gallery: TensorOrTuple | None = None,
    gallery_embeddings: Tensor | None = None,
    k: int = 5,
    batch_size: int = 64,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
    text_pooling_mask: int | None = 1,
    text_forward_args: Any = None,
    image_forward_args: Any = None,
) -> RetrievalExplanation:
    r"""Text-to-image search, explained: each caption's top-k gallery images, with the map of
    every retrieved image for the caption and the caption's token map for every image.

    The gallery is embedded once, ``batch_size`` images at a time (only the embeddings are
    kept), or taken cached (``image_fam.embed`` over the gallery, computed once and stored).
    Image maps need the retrieved images' activations: with gallery images, one more forward
    of the N * k retrieved images; with cached embeddings alone, only the token maps are
    computed (``gallery_maps`` is None), at the cost of one text forward.

    Args:
        text_fam (FeatureActivationMap): FAM on the text tower's token states.
        image_fam (FeatureActivationMap): FAM on the image tower.
        texts (Tensor or tuple[Tensor, ...]): N captions, usually ``(input_ids,
                    attention_mask)``.
        gallery (Tensor or tuple[Tensor, ...], optional): G gallery images.
        gallery_embeddings (Tensor, optional): Or their ``(G, D)`` embeddings. Exactly one of
                    the two is given.
        k (int, optional): Images retrieved per caption. Default: 5
        batch_size (int, optional): Gallery images per forward and gallery rows per scoring
                    chunk. Default: 64
        relu_attributions, normalize_weights (bool, optional): As in
                    :meth:`FeatureActivationMap.attribute`, for both sides.
        text_pooling_mask (int, optional): Index of the pooling mask among the text inputs.
                    Default: 1
        text_forward_args (Any, optional): Passed to every text-tower forward. Default: None
        image_forward_args (Any, optional): Passed to every image-tower forward.
                    Default: None

    Returns:
        :class:`~captum_fam.tasks.RetrievalExplanation`: ``indices`` and ``scores`` ``(N, k)``
        (gallery rows, best first), ``maps (N, k, T)`` the caption's token map for each
        retrieved image and ``gallery_maps (N, k, *S)`` each retrieved image's map for the
        caption (None with ``gallery_embeddings``).

    Examples::

        >>> from captum_fam.image_text import explain_text_to_image
        >>> gallery = make_shapes(100, objects=2, seed=1).images
        >>> cache = torch.cat([image_fam.embed(chunk) for chunk in gallery.split(64)])
        >>> texts = clip.tokenizer.encode(["a star next to a ring"])
        >>> hits = explain_text_to_image(text_fam, image_fam, texts, gallery=gallery, k=3)
        >>> hits.indices.shape, hits.gallery_maps.shape
        (torch.Size([1, 3]), torch.Size([1, 3, 8, 8]))
    """
    text_engine, image_engine = _check_fams(image_fam, text_fam)[::-1]
    check_mask_index(text_pooling_mask)
    return retrieve(
        text_engine,
        format_batch(texts, "texts"),
        image_engine,
        None if gallery is None else format_batch(gallery, "gallery"),
        gallery_embeddings,
        k,
        batch_size,
        {"relu_attributions": relu_attributions, "normalize_weights": normalize_weights},
        (text_forward_args, image_forward_args),
        (text_pooling_mask, None),
    )


def _check_fams(image_fam: Any, text_fam: Any) -> tuple[Any, Any]:
    for name, fam in (("image_fam", image_fam), ("text_fam", text_fam)):
        if not isinstance(fam, FeatureActivationMap):
            raise TypeError(f"{name} must be a FeatureActivationMap; got {type(fam).__name__}")
    return image_fam.engine, text_fam.engine
