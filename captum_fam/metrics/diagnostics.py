"""A guard against reference-agnostic maps: do these maps depend on the reference at all?

FAM's map is ``sum_k w_k A_k``. When every channel carries a large shared component (a common
mode: post-ReLU features whose similarity a head, not the pooled layer, makes discriminative) the
channel weights are all alike whatever the reference, and the map is a positive mix of the
activation maps: it follows where activations are large, the *reference-agnostic map*
``mean_k A_k``. Such a map looks confident and means nothing about the reference.

:func:`reference_dependence` measures, in one query forward, how close each raw map is to that
reference-agnostic map (Pearson correlation over positions) and flags a batch whose median is at
or above :data:`AGNOSTIC_THRESHOLD`. The cures: explain the similarity the model uses
(``embedding="output"``, pulled back through its head), or contrast against a background set of
ordinary inputs (``background=``), which removes the common mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam._checks import TensorOrTuple, format_batch
from captum_fam._engine.pooling import PoolingMask
from captum_fam._engine.references import plan_references
from captum_fam.attribution import FeatureActivationMap

__all__ = ["AGNOSTIC_THRESHOLD", "ReferenceDependence", "position_correlation",
           "reference_dependence"]  # fmt: skip

AGNOSTIC_THRESHOLD = 0.97
"""Median correlation with the reference-agnostic map at which maps are flagged.

Measured (docs/benchmarks.md: ``python benchmarks/compare.py --model common-mode``, column
"agnostic"; ``python -m captum_fam.zoo.evaluate``, keys ``agnostic_correlation_*``): the shipped
shapes models' default maps have a median of about 0.6 to 0.87; maps of a layer whose channels
share a position-biased common mode, explained on the layer's own pooled channels, reach 0.98
to 0.999 while their pointing falls to chance.
"""


@dataclass
class ReferenceDependence:
    """How much a batch of FAM maps depends on its references.

    Attributes:
        correlation (Tensor): ``(N,)`` Pearson correlation, over positions, of each raw map
                    (no ReLU, no normalisation) with the reference-agnostic map
                    ``mean_k A_k``; NaN where either is constant (a single position).
        median (float): The median of ``correlation`` (NaNs left out; NaN if all are).
        agnostic (bool): ``median >= threshold``: the maps barely depend on the reference.
        threshold (float): The threshold used.
    """

    correlation: Tensor
    median: float
    agnostic: bool
    threshold: float

    def describe(self) -> str:
        """One line for a console: the figure, and the cure when the maps are flagged."""
        figure = (
            f"maps correlate {self.median:.2f} (median) with the reference-agnostic activation map"
        )
        if not self.agnostic:
            return f"reference dependence: ok ({figure})"
        return (
            f"reference dependence: LOW ({figure}, threshold {self.threshold:.2f}): these maps "
            "barely depend on the reference. Explain the similarity the model uses "
            "(embedding='output' through its head) or contrast against ordinary inputs "
            "(background=...)"
        )


def position_correlation(maps: Tensor, other: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Pearson correlation over positions of two ``(N, 1, *S)`` maps, per example.

    Args:
        maps (Tensor): ``(N, 1, *S)``.
        other (Tensor): ``(N, 1, *S)``.
        mask (Tensor, optional): ``(N, *S)`` bool: the positions compared. Default: all

    Returns:
        Tensor: ``(N,)`` in ``[-1, 1]``; NaN where either map is constant over the positions.
    """
    if maps.shape != other.shape:
        raise ValueError(
            f"maps {tuple(maps.shape)} and other {tuple(other.shape)} must have the same shape"
        )
    a, b = maps.flatten(1).double(), other.flatten(1).double()
    weights = (
        torch.ones_like(a) if mask is None else mask.flatten(1).to(device=a.device, dtype=a.dtype)
    )
    count = weights.sum(dim=1, keepdim=True)
    a = (a - (a * weights).sum(1, keepdim=True) / count) * weights
    b = (b - (b * weights).sum(1, keepdim=True) / count) * weights
    denominator = a.norm(dim=1) * b.norm(dim=1)
    correlation = (a * b).sum(1) / denominator
    return torch.where(denominator > 0, correlation, torch.nan).float()


@torch.no_grad()
def reference_dependence(
    fam: FeatureActivationMap,
    inputs: TensorOrTuple,
    reference: TensorOrTuple | None = None,
    reference_embeddings: Tensor | None = None,
    additional_forward_args: Any = None,
    attribute_to_layer_input: bool = False,
    pooling_mask: PoolingMask = None,
    threshold: float = AGNOSTIC_THRESHOLD,
) -> ReferenceDependence:
    r"""Whether FAM's maps for these pairs barely depend on the reference.

    One query forward (and one for reference inputs), as :meth:`FeatureActivationMap.attribute`.

    Args:
        fam (FeatureActivationMap): The explainer.
        inputs (Tensor or tuple[Tensor, ...]): The queries, as in
                    :meth:`FeatureActivationMap.attribute`; so are ``reference``,
                    ``reference_embeddings``, ``additional_forward_args``,
                    ``attribute_to_layer_input`` and ``pooling_mask``.
        threshold (float, optional): Median correlation at which the maps are flagged.
                    Default: :data:`AGNOSTIC_THRESHOLD`

    Returns:
        :class:`ReferenceDependence`

    Examples::

        >>> check = reference_dependence(fam, queries, reference_embeddings=prototypes[labels])
        >>> print(check.describe())
        reference dependence: ok (maps correlate 0.87 (median) with the reference-agnostic ...)
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1]; got {threshold!r}")
    engine = fam.engine
    batch = format_batch(inputs, "inputs")
    n = batch[0].shape[0]
    plan = plan_references(n, batch, reference, reference_embeddings, "reference")
    args, to_input = additional_forward_args, attribute_to_layer_input
    queries = engine.queries(batch, args, to_input, pooling_mask)
    rows = engine.rows(plan, queries.embeddings, args, to_input, pooling_mask)
    raw = engine.explain(queries, rows, relu_attributions=False, normalize_weights=False)
    agnostic = queries.activations.mean(dim=1, keepdim=True)
    correlation = position_correlation(raw, agnostic, queries.mask)
    finite = correlation[~correlation.isnan()]
    median = float(finite.median()) if finite.numel() else float("nan")
    return ReferenceDependence(
        correlation=correlation.to(batch[0].device),
        median=median,
        agnostic=bool(median >= threshold),
        threshold=float(threshold),
    )
