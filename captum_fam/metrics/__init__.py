"""Evaluation of similarity explanations, for FAM and any other map method.

- Captum's robustness metrics on similarity scores (:mod:`.robustness`): :func:`infidelity`,
  :func:`sensitivity_max`, :func:`gaussian_perturbation`; the glue they use lives in
  :mod:`captum_fam.interop` (:func:`similarity_forward`, :func:`to_input_shape`,
  :func:`as_tuple_explanation`, re-exported here).
- Faithfulness to a score ``score_fn(images) -> (N,)`` (:mod:`.faithfulness`):
  :func:`deletion`, :func:`insertion` (curves and areas), :func:`average_drop`,
  :func:`increase_in_confidence`.
- Localisation against masks (:mod:`.localisation`): :func:`pointing_game`,
  :func:`energy_pointing_game`, :func:`reference_specificity` (does the map follow the
  reference on two-object images).
- Sanity (:mod:`.randomization`): :func:`randomization_check` (cascading parameter
  randomisation), with :func:`spearman` and :func:`ssim`.
- A guard (:mod:`.diagnostics`): :func:`reference_dependence` says when maps barely depend on
  the reference (they follow the reference-agnostic activation map), with the cure.
- :class:`SimilarityHead` (:mod:`.classifier_view`): a similarity model as an ``(N, K)``
  classifier over K references, so that classifier-oriented libraries (Quantus) evaluate it.

Maps may be ``(N, 1, h, w)`` layer maps (upsampled bilinearly with
``LayerAttribution.interpolate``), ``(N, h, w)``, or ``(N, C, H, W)`` input attributions
(summed over channels). All functions work on torch tensors, batched, and return per-example
results (means give the usual single figures).
"""

from captum_fam.interop import as_tuple_explanation, similarity_forward, to_input_shape
from captum_fam.metrics.classifier_view import SimilarityHead
from captum_fam.metrics.diagnostics import (
    AGNOSTIC_THRESHOLD,
    ReferenceDependence,
    position_correlation,
    reference_dependence,
)
from captum_fam.metrics.faithfulness import (
    PerturbationCurves,
    average_drop,
    blur,
    deletion,
    increase_in_confidence,
    insertion,
)
from captum_fam.metrics.localisation import (
    dilate,
    energy_pointing_game,
    pointing_game,
    reference_specificity,
)
from captum_fam.metrics.randomization import (
    RandomizationResult,
    randomization_check,
    spearman,
    ssim,
)
from captum_fam.metrics.robustness import gaussian_perturbation, infidelity, sensitivity_max

__all__ = [
    "AGNOSTIC_THRESHOLD",
    "ReferenceDependence",
    "position_correlation",
    "reference_dependence",
    "PerturbationCurves",
    "RandomizationResult",
    "SimilarityHead",
    "as_tuple_explanation",
    "average_drop",
    "blur",
    "deletion",
    "dilate",
    "energy_pointing_game",
    "gaussian_perturbation",
    "increase_in_confidence",
    "infidelity",
    "insertion",
    "pointing_game",
    "randomization_check",
    "reference_specificity",
    "sensitivity_max",
    "similarity_forward",
    "spearman",
    "ssim",
    "to_input_shape",
]
