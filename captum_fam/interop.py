"""Glue between FAM and Captum's other methods: the same score, the same shapes.

- :func:`similarity_forward`: the score FAM explains as a differentiable forward, for Captum's
  gradient methods (``IntegratedGradients``, ``LayerGradCam``, ``LayerIntegratedGradients``)
  and ``captum.metrics``;
- :func:`to_input_shape`: layer maps ``(N, 1, *s)`` brought to the inputs' shape;
- :func:`interpolation_mode`: the matching ``LayerAttribution.interpolate`` mode for 1-D, 2-D
  and 3-D maps;
- :func:`as_tuple_explanation`: an ``attribute`` returning a tuple, as ``sensitivity_max`` wants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from captum.attr import LayerAttribution
from torch import Tensor

from captum_fam._checks import TensorOrTuple, check_pairing, format_batch, format_embeddings
from captum_fam._engine.references import pair_rows
from captum_fam.attribution import FeatureActivationMap

__all__ = ["as_tuple_explanation", "interpolation_mode", "similarity_forward", "to_input_shape"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def similarity_forward(fam: FeatureActivationMap) -> Callable[..., Tensor]:
    r"""A forward ``f(inputs, reference_embeddings, *additional_forward_args) -> (N,)``.

    It scores each input against its reference embedding with the FAM's model, layer and
    similarity: the score the maps explain (the model's own output similarity by default). It
    is differentiable, so it is the forward to give gradient methods for a side-by-side
    comparison. Give the embeddings (one row per input, or one shared row) as the first
    additional forward argument so that Captum's metrics expand them with the inputs.

    Examples::

        >>> forward = similarity_forward(fam)
        >>> ig = IntegratedGradients(forward).attribute(
        ...     images, additional_forward_args=(fam.embed(references),))
        >>> gradcam = LayerGradCam(forward, model.layer4).attribute(
        ...     images, additional_forward_args=(fam.embed(references),))
    """

    def forward(inputs: TensorOrTuple, reference_embeddings: Tensor, *args: Any) -> Tensor:
        batch = format_batch(inputs, "inputs")
        query = fam.engine.embed(batch, args if args else None, grad_enabled=True)
        rows = format_embeddings(reference_embeddings, "reference_embeddings")
        check_pairing(query.shape[0], rows.shape[0], "reference_embeddings")
        rows = pair_rows(rows.to(query), query.shape[0])
        return fam.engine.scores(query, rows).to(batch[0].device)

    return forward


def interpolation_mode(dims: int) -> str:
    """``"linear"``, ``"bilinear"`` or ``"trilinear"`` for maps with 1, 2 or 3 positional dims."""
    try:
        return _MODES[dims]
    except KeyError:
        raise ValueError(f"maps must have 1, 2 or 3 positional dimensions; got {dims}") from None


def to_input_shape(
    attributions: Tensor, inputs: Tensor, interpolate_mode: str | None = None
) -> Tensor:
    r"""Upsample ``(N, 1, *s)`` layer maps to the inputs' ``(N, C, *S)`` shape.

    Layer maps are upsampled with :meth:`LayerAttribution.interpolate` and repeated over the
    input channels; attributions that already have the inputs' shape are returned unchanged.

    Args:
        attributions (Tensor): ``(N, 1, *s)`` maps.
        inputs (Tensor): ``(N, C, *S)`` inputs with as many positional dimensions.
        interpolate_mode (str, optional): Default: linear, bilinear or trilinear by the number
                    of positional dimensions.

    Returns:
        Tensor: ``(N, C, *S)``.
    """
    if attributions.shape == inputs.shape:
        return attributions
    if (
        attributions.dim() != inputs.dim()
        or attributions.dim() < 3
        or attributions.shape[1] != 1
        or attributions.shape[0] != inputs.shape[0]
    ):
        raise ValueError(
            f"attributions {tuple(attributions.shape)} must be (N, 1, *s) maps with the inputs' "
            f"number of dimensions, or have the inputs' shape {tuple(inputs.shape)}"
        )
    mode = interpolate_mode or interpolation_mode(inputs.dim() - 2)
    upsampled = LayerAttribution.interpolate(attributions, tuple(inputs.shape[2:]), mode)
    return upsampled.expand_as(inputs)


def as_tuple_explanation(attribute: Callable[..., Any]) -> Callable[..., tuple[Tensor, ...]]:
    """Wrap an ``attribute`` method so that it returns a tuple, as sensitivity_max expects."""

    def explanation(*args: Any, **kwargs: Any) -> tuple[Tensor, ...]:
        result = attribute(*args, **kwargs)
        return result if isinstance(result, tuple) else (result,)

    return explanation
