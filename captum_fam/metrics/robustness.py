"""Captum's robustness metrics (infidelity, sensitivity_max) on similarity explanations.

Captum's infidelity needs a forward that returns one score per example and attributions of the
input's shape; its sensitivity_max wants tuple explanations from layer methods. The wrappers
here do that glue (:mod:`captum_fam.interop`) for FAM and any other map method explaining the
same similarity, with the reference passed so that Captum expands it alongside the inputs
(repeat_interleave order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from torch import Tensor

from captum_fam._checks import TensorOrTuple, format_embeddings, one_of
from captum_fam._compat import default_perturb_func, format_additional_forward_args
from captum_fam._engine.references import pair_rows
from captum_fam.attribution import FeatureActivationMap
from captum_fam.interop import as_tuple_explanation, similarity_forward, to_input_shape

__all__ = ["gaussian_perturbation", "infidelity", "sensitivity_max"]


def gaussian_perturbation(stdev: float = 0.03) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    r"""An infidelity ``perturb_func``: Gaussian noise ``p``, returning ``(p, inputs - p)``."""

    def perturb(inputs: Tensor) -> tuple[Tensor, Tensor]:
        noise = torch.randn_like(inputs) * stdev
        return noise, inputs - noise

    return perturb


def infidelity(
    fam: FeatureActivationMap,
    inputs: Tensor,
    reference: Tensor | None = None,
    reference_embeddings: Tensor | None = None,
    attributions: Tensor | None = None,
    perturb_func: Callable[..., Any] | None = None,
    additional_forward_args: Any = None,
    n_perturb_samples: int = 10,
    max_examples_per_batch: int | None = None,
    normalize: bool = True,
) -> Tensor:
    r"""Captum's infidelity of maps explaining ``fam``'s similarity scores.

    Args:
        fam (FeatureActivationMap): Defines the model, layer and similarity explained.
        inputs (Tensor): Query images ``(N, C, H, W)``.
        reference (Tensor, optional): Reference images (M rule of
                    :meth:`FeatureActivationMap.attribute`); embedded once, then held fixed.
        reference_embeddings (Tensor, optional): Or their embeddings. Exactly one is given.
        attributions (Tensor, optional): The maps to evaluate, ``(N, 1, h, w)`` or the inputs'
                    shape, from any method explaining this similarity (Integrated Gradients,
                    Grad-CAM, ...). Default: FAM's own maps.
        perturb_func (Callable, optional): As in Captum, returning ``(perturbation,
                    perturbed_inputs)``. Default: :func:`gaussian_perturbation` ``(0.03)``.
        additional_forward_args (Any, optional): Further model arguments, as in Captum.
        n_perturb_samples (int, optional): Perturbations per example. Default: 10
        max_examples_per_batch (int, optional): As in Captum. Default: None
        normalize (bool, optional): Rescale attributions optimally before comparing (Captum's
                    ``normalize``). Default: True, since FAM maps carry no absolute scale.

    Returns:
        *Tensor* ``(N,)`` of infidelity values (lower is better).

    Examples::

        >>> scores = infidelity(fam, images, reference=references)
        >>> ig_scores = infidelity(fam, images, reference=references, attributions=ig_maps)
    """
    one_of(reference, reference_embeddings, ("reference", "reference_embeddings"))
    n = inputs.shape[0]
    if reference is not None:
        reference_embeddings = fam.embed(reference)
    rows = pair_rows(format_embeddings(reference_embeddings, "reference_embeddings"), n)
    if attributions is None:
        attributions = fam.attribute(
            inputs, reference_embeddings=rows, additional_forward_args=additional_forward_args
        )
    args = format_additional_forward_args(additional_forward_args)
    return captum_infidelity(
        similarity_forward(fam),
        perturb_func or gaussian_perturbation(),
        inputs,
        to_input_shape(attributions, inputs),
        additional_forward_args=(rows.contiguous(), *args),
        n_perturb_samples=n_perturb_samples,
        max_examples_per_batch=max_examples_per_batch,
        normalize=normalize,
    )


def sensitivity_max(
    explainer: Any,
    inputs: TensorOrTuple,
    perturb_func: Callable[..., Any] = default_perturb_func,
    perturb_radius: float = 0.02,
    n_perturb_samples: int = 10,
    norm_ord: str = "fro",
    max_examples_per_batch: int | None = None,
    **attribute_kwargs: Any,
) -> Tensor:
    r"""Captum's sensitivity_max for a FAM (or any attribution object's ``attribute``).

    Args:
        explainer: An object with Captum's ``attribute`` method: a FeatureActivationMap,
                    ``NoiseTunnel(fam)``, ``LayerGradCam``, ...
        inputs (Tensor or tuple[Tensor, ...]): The queries.
        perturb_func, perturb_radius, n_perturb_samples, norm_ord, max_examples_per_batch:
                    As in ``captum.metrics.sensitivity_max``.
        **attribute_kwargs: Passed to ``explainer.attribute`` (``reference``,
                    ``reference_embeddings`` with M == 1 or M == N rows, ...). Captum expands the
                    inputs in repeat_interleave order, which FAM's pairing rule follows.

    Returns:
        *Tensor* ``(N,)`` of maximal sensitivities (lower is better).

    Examples::

        >>> sens = sensitivity_max(fam, images, reference_embeddings=prototypes[labels])
    """
    return captum_sensitivity_max(
        as_tuple_explanation(explainer.attribute),
        inputs,
        perturb_func=perturb_func,
        perturb_radius=perturb_radius,
        n_perturb_samples=n_perturb_samples,
        norm_ord=norm_ord,
        max_examples_per_batch=max_examples_per_batch,
        **attribute_kwargs,
    )
