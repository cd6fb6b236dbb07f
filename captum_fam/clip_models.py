r"""Image-text models: FAM for Hugging Face CLIP, one map per tower.

A CLIP model scores an image against a caption by the cosine of two embeddings, one from each
tower: the image tower's class token (after ``post_layernorm``) projected by
``visual_projection``, and the text tower's end-of-text token (after ``final_layer_norm``)
projected by ``text_projection``. :func:`clip_fams` wires a ``transformers.CLIPModel`` to two
:class:`~captum_fam.FeatureActivationMap` objects: which patches make the image match the
caption, and which tokens make the caption match the image. Each side is explained against the
other tower's embedding (``reference_embeddings=``).

At the default layers, the last encoder blocks, the channel weights are the pooled token's
(class token's, end-of-text token's) Jacobian transposed, applied to every patch or token: a
first-order pull-back, exact only for a linear head (:func:`clip_fams` says what follows from
CLIP's LayerNorm head). Text maps are zero on padding with ``pooling_mask=1``.

Needs ``transformers`` (the ``text`` extra: ``pip install "captum-fam[text]"``), imported by
the caller only: this module works on the model it is given.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.text.encoders import default_text_layer

__all__ = ["CLIPImageForward", "CLIPTextForward", "clip_fams"]


class CLIPImageForward(nn.Module):
    r"""A CLIP model's image tower as an embedder: ``pixel_values (N, 3, H, W) -> (N, D)``.

    Returns what ``model.get_image_features(pixel_values=...)`` gives: the projected class
    token (the ``pooler_output`` of the output object that ``transformers`` 5 returns, the
    tensor itself in ``transformers`` 4), not normalised (FAM's cosine normalises).

    Args:
        model (nn.Module): A ``transformers.CLIPModel``, or a model with the same
                    ``get_image_features`` method.

    Attributes:
        patch_size (int or None): The vision tower's patch size, which lays the tokens on the
                    image's patch grid for ``token_layout="auto"``.

    Examples::

        >>> image_forward = CLIPImageForward(model)
        >>> image_forward(batch["pixel_values"]).shape      # (N, projection_dim)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_model(model, ("get_image_features",))
        self.model: Any = model
        vision_config = getattr(getattr(model, "config", None), "vision_config", None)
        patch_size = getattr(vision_config, "patch_size", None)
        self.patch_size = patch_size if isinstance(patch_size, int) else None

    def forward(self, pixel_values: Tensor) -> Tensor:
        return _projected(self.model.get_image_features(pixel_values=pixel_values))


class CLIPTextForward(nn.Module):
    r"""A CLIP model's text tower as an embedder: ``(input_ids, attention_mask) -> (N, D)``.

    Returns what ``model.get_text_features(input_ids=..., attention_mask=...)`` gives: the
    projected end-of-text token, not normalised.

    Args:
        model (nn.Module): A ``transformers.CLIPModel``, or a model with the same
                    ``get_text_features`` method.

    Examples::

        >>> text_forward = CLIPTextForward(model)
        >>> batch = processor(text=captions, return_tensors="pt", padding=True)
        >>> text_forward(batch["input_ids"], batch["attention_mask"]).shape   # (N, D)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        _check_model(model, ("get_text_features",))
        self.model: Any = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return _projected(
            self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        )


def clip_fams(
    model: nn.Module,
    vision_layer: nn.Module | None = None,
    text_layer: nn.Module | None = None,
    weighting: str = "reference",
) -> tuple[FeatureActivationMap, FeatureActivationMap]:
    r"""FAM for both towers of a CLIP model: ``(image_fam, text_fam)``.

    Both explain CLIP's own score, the cosine of the projected embeddings
    (``embedding="output"``), each against the other tower's embedding given as
    ``reference_embeddings`` (from the other FAM's :meth:`~captum_fam.FeatureActivationMap.embed`).

    - ``image_fam`` runs :class:`CLIPImageForward` on ``pixel_values`` and reads
      ``vision_layer``'s ``(N, 1 + h*w, C)`` tokens as an ``(h, w)`` patch grid
      (``token_layout="auto"``; the class token is dropped from the map, with a warning that
      says so): maps are ``(N, 1, h, w)``, e.g. ``7 x 7`` for ViT-B/32 at 224 pixels.
    - ``text_fam`` runs :class:`CLIPTextForward` on ``(input_ids, attention_mask)`` and reads
      ``text_layer``'s ``(N, T, C)`` token states as a sequence (``token_layout="sequence"``):
      maps are ``(N, 1, T)``. Pass ``pooling_mask=1`` to its calls, so that padding is exactly
      0 in the maps.

    The channel weights are the cosine's coefficients pulled back through the layers after the
    explained one (one backward through them, none through the backbone), summed over every
    token, the class token included. At the default layers, the last encoder blocks, all of
    that gradient sits on the pooled token (class token, end-of-text token), and the map is
    every patch's or token's state weighted by that token's channel coefficients: a first-order
    pull-back, exact only for a linear head. CLIP's head starts with a LayerNorm, which ignores
    the scale of the pooled state, so these maps do not add up to the score, and the
    end-of-text token's own value in a last-layer text map is zero (up to the LayerNorm's
    eps). Text states are computed under the causal mask (a token's state reads itself and the
    tokens before it); the tokens after the end-of-text token are padding, and the attention
    mask as ``pooling_mask`` sets them to exactly 0.

    Args:
        model (nn.Module): A ``transformers.CLIPModel`` (or a model with its
                    ``get_image_features`` and ``get_text_features`` methods).
        vision_layer (nn.Module, optional): The image tower's layer explained, a module of
                    ``model.vision_model`` whose output is ``(N, T, C)`` tokens. Default: the
                    last vision encoder layer, ``model.vision_model.encoder.layers[-1]``.
        text_layer (nn.Module, optional): The text tower's layer explained, a module of
                    ``model.text_model`` with ``(N, T, C)`` output. Default: the last text
                    encoder layer, ``model.text_model.encoder.layers[-1]``.
        weighting (str, optional): ``"reference"`` (``w = g``) or ``"contribution"``
                    (``w = e * g`` with ``e`` the mean of the map's positions: the patches
                    without the class token, the caption's valid tokens), as in
                    :class:`~captum_fam.FeatureActivationMap`. Default: ``"reference"``

    Returns:
        *tuple* ``(image_fam, text_fam)`` of :class:`~captum_fam.FeatureActivationMap`.

    Raises:
        TypeError: if ``model`` has no ``get_image_features`` and ``get_text_features``, or a
                    layer is not an ``nn.Module``.
        ValueError: if a layer is not a module of its tower, or a tower has no list of
                    encoder layers to default to.

    Examples::

        >>> from transformers import CLIPModel, CLIPProcessor
        >>> model = CLIPModel.from_pretrained("openai/clip-vit-base-patch32").eval()
        >>> processor = CLIPProcessor.from_pretrained("openai/clip-vit-base-patch32")
        >>> batch = processor(text=["a photo of a cat"], images=[image], return_tensors="pt",
        ...                   padding=True)
        >>> image_fam, text_fam = clip_fams(model)
        >>> pixels, text = batch["pixel_values"], (batch["input_ids"], batch["attention_mask"])
        >>> patch_maps = image_fam.attribute(
        ...     pixels, reference_embeddings=text_fam.embed(text))           # (1, 1, 7, 7)
        >>> token_maps = text_fam.attribute(
        ...     text, reference_embeddings=image_fam.embed(pixels), pooling_mask=1)   # (1, 1, T)
    """
    _check_model(model, ("get_image_features", "get_text_features"))
    vision_layer = _tower_layer(model, "vision_model", vision_layer, "vision_layer")
    text_layer = _tower_layer(model, "text_model", text_layer, "text_layer")
    image_fam = FeatureActivationMap(
        CLIPImageForward(model),
        vision_layer,
        "cosine",
        weighting,
        token_layout="auto",
        embedding="output",
    )
    text_fam = FeatureActivationMap(
        CLIPTextForward(model),
        text_layer,
        "cosine",
        weighting,
        token_layout="sequence",
        embedding="output",
    )
    return image_fam, text_fam


def _check_model(model: Any, methods: tuple[str, ...]) -> None:
    if not isinstance(model, nn.Module) or not all(
        callable(getattr(model, name, None)) for name in methods
    ):
        raise TypeError(
            "model must be a transformers CLIPModel (an nn.Module with "
            f"{' and '.join(methods)}); got {type(model).__name__}"
        )


def _projected(output: Any) -> Tensor:
    """The projected embedding: ``transformers`` 5 returns it as the output's pooler_output."""
    if isinstance(output, Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if isinstance(pooled, Tensor):
        return pooled
    raise ValueError(
        f"the CLIP model's feature method returned {type(output).__name__} without a "
        "pooler_output tensor; expected the projected (N, D) embedding"
    )


def _tower_layer(
    model: nn.Module, tower_name: str, layer: nn.Module | None, argument: str
) -> nn.Module:
    """The layer explained in one tower: the given one (checked), or the tower's last block."""
    tower = getattr(model, tower_name, None)
    if layer is None:
        if not isinstance(tower, nn.Module):
            raise ValueError(
                f"{type(model).__name__} has no {tower_name} to take the default {argument} "
                f"from: pass {argument}"
            )
        try:  # the longest list of blocks: encoder.layers in both CLIP towers
            return default_text_layer(tower)
        except ValueError:
            raise ValueError(
                f"found no list of encoder layers in model.{tower_name}: pass {argument} (a "
                f"module whose output is (N, T, C) tokens, e.g. "
                f"model.{tower_name}.encoder.layers[-1])"
            ) from None
    if not isinstance(layer, nn.Module):
        raise TypeError(f"{argument} must be an nn.Module of the model; got {type(layer).__name__}")
    scope = tower if isinstance(tower, nn.Module) else model
    if not any(module is layer for module in scope.modules()):
        where = f"model.{tower_name}" if scope is tower else "model"
        raise ValueError(
            f"{argument} must be a module of {where}; got a {type(layer).__name__} outside it"
        )
    return layer
