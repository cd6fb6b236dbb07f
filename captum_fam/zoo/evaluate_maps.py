"""Map figures of the shapes models: pointing, reference specificity, the gradient baseline
and reference-agnostic diagnostics (used by :mod:`captum_fam.zoo.evaluate`).

Every map is FAM's (or Captum's LayerGradCam on the model's own cosine) against class
prototypes built in the space of the map's ``embedding``; pointing uses
:func:`captum_fam.metrics.pointing_game` (5% tolerance).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from captum.attr import LayerGradCam
from torch import Tensor, nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.interop import similarity_forward
from captum_fam.metrics import pointing_game, position_correlation, reference_specificity
from captum_fam.tasks import class_prototypes
from captum_fam.zoo.shapes import SHAPE_CLASSES, ShapesBatch

__all__ = [
    "agnostic_diagnostics",
    "gradcam_figures",
    "layer_activations",
    "pointing_figures",
    "pointing_rate",
    "prototypes",
]


def prototypes(embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, C)`` L2-normalised class means of the L2-normalised embeddings
    (:func:`captum_fam.tasks.class_prototypes`), indexed by label; absent classes are zero."""
    classes, means = class_prototypes(embeddings, labels, normalize=True)
    table = embeddings.new_zeros(num_classes, embeddings.shape[1])
    table[classes] = F.normalize(means, dim=1)
    return table


@torch.no_grad()
def pointing_rate(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    masks: Tensor,
    references: Tensor,
    *,
    weighting: str = "reference",
    foils: Tensor | None = None,
    embedding: str = "output",
) -> float:
    """Share of FAM maps whose maximum falls on the target object (the pointing game).

    Args:
        model (nn.Module): The embedding model.
        layer (nn.Module): The layer whose output is the activation map.
        images (Tensor): ``(N, 3, H, W)`` queries.
        masks (Tensor): ``(N, H, W)`` bool target masks.
        references (Tensor): ``(N, D)`` reference embeddings (e.g. the target's prototype),
                    in the space of ``FeatureActivationMap(..., embedding=embedding).embed``.
        weighting (str, optional): FAM's weighting. Default: "reference"
        foils (Tensor, optional): ``(N, D)`` foil embeddings for contrastive maps ("why the
                    target rather than the foil"). Default: None
        embedding (str, optional): FAM's ``embedding``: ``"output"`` (the model's output) or
                    ``"layer"`` (the layer's pooled channels). Default: "output"

    Returns:
        float: The pointing rate, with :func:`captum_fam.metrics.pointing_game`'s tolerance
        (5% of the image side).
    """
    fam = FeatureActivationMap(model, layer, weighting=weighting, embedding=embedding)
    maps = fam.attribute(images, reference_embeddings=references, foil_embeddings=foils)
    return float(pointing_game(maps, masks).float().mean())


def _space_prototypes(
    fam: FeatureActivationMap, images: Tensor, labels: Tensor, num_classes: int
) -> Tensor:
    """Class prototypes in the space of ``fam.embed`` (output or pooled layer)."""
    return prototypes(F.normalize(fam.embed(images), dim=1), labels, num_classes)


def pointing_figures(
    model: nn.Module,
    layer: nn.Module,
    scenes: ShapesBatch,
    support_images: Tensor,
    support_labels: Tensor,
) -> dict[str, float]:
    """Pointing rates of every FAM variant on two-object scenes, each object in turn.

    Variants: ``embedding`` "output" and "layer" (prototypes built with that variant's
    :meth:`~captum_fam.FeatureActivationMap.embed`), ``weighting`` "reference" and
    "contribution", plain and contrastive (foil: the other object's class prototype).

    Returns:
        dict[str, float]: ``pointing_{embedding}_{weighting}_{plain|contrastive}_object{1|2}``.
    """
    n_cls = len(SHAPE_CLASSES)
    out: dict[str, float] = {}
    for embedding in ("output", "layer"):
        fam = FeatureActivationMap(model, layer, embedding=embedding)
        protos = _space_prototypes(fam, support_images, support_labels, n_cls)
        for weighting in ("reference", "contribution"):
            for contrastive in (False, True):
                kind = "contrastive" if contrastive else "plain"
                for k in range(2):
                    foils = protos[scenes.labels[:, 1 - k]] if contrastive else None
                    out[f"pointing_{embedding}_{weighting}_{kind}_object{k + 1}"] = pointing_rate(
                        model,
                        layer,
                        scenes.images,
                        scenes.masks[:, k],
                        protos[scenes.labels[:, k]],
                        weighting=weighting,
                        foils=foils,
                        embedding=embedding,
                    )
    out.update(gradcam_figures(model, layer, scenes, support_images, support_labels))
    return out


def gradcam_figures(
    model: nn.Module,
    layer: nn.Module,
    scenes: ShapesBatch,
    support_images: Tensor,
    support_labels: Tensor,
) -> dict[str, float]:
    """Captum's LayerGradCam at ``layer`` on the model's own cosine to each object's prototype.

    The baseline of the same similarity FAM's default explains
    (:func:`captum_fam.interop.similarity_forward`): ``pointing_gradcam_object{1|2}`` and
    ``specificity_gradcam``.
    """
    fam = FeatureActivationMap(model, layer)
    protos = _space_prototypes(fam, support_images, support_labels, len(SHAPE_CLASSES))
    gradcam = LayerGradCam(similarity_forward(fam), layer)
    maps = []
    with torch.enable_grad():
        for k in range(2):
            rows = protos[scenes.labels[:, k]]
            maps.append(
                gradcam.attribute(
                    scenes.images, additional_forward_args=(rows,), relu_attributions=True
                ).detach()
            )
    out = {
        f"pointing_gradcam_object{k + 1}": float(
            pointing_game(maps[k], scenes.masks[:, k]).float().mean()
        )
        for k in range(2)
    }
    specific = reference_specificity(scenes.masks, maps=(maps[0], maps[1]))
    out["specificity_gradcam"] = float(specific.float().mean())
    return out


def layer_activations(model: nn.Module, layer: nn.Module, images: Tensor) -> Tensor:
    """The ``(N, C, h, w)`` output of ``layer`` for ``images`` (FAM's capture, stopped there)."""
    fam = FeatureActivationMap(model, layer, embedding="layer")
    return fam.engine.queries((images,)).activations


def _channel_weights(
    model: nn.Module, layer: nn.Module, images: Tensor, references: Tensor, embedding: str
) -> Tensor:
    """FAM's "reference" channel weights ``(N, C)`` (for ``embedding="output"``, pulled back
    through the head), as the engine computes them."""
    engine = FeatureActivationMap(model, layer, embedding=embedding).engine
    queries = engine.queries((images,))
    return engine.channel_coefficients(queries, engine.output_coefficients(queries, references))


def agnostic_diagnostics(
    model: nn.Module,
    layer: nn.Module,
    scenes: ShapesBatch,
    support_images: Tensor,
    support_labels: Tensor,
) -> dict[str, float]:
    """Does FAM follow the reference, or does it reproduce a reference-agnostic map?

    The reference-agnostic map is the layer's channel mean: a saliency of the image alone,
    which can point into at most one of the two objects of a scene. Figures:

    - ``pointing_agnostic_object{1|2}``, ``pointing_agnostic_either``: its pointing rates;
    - ``specificity_{embedding}_{weighting}``: :func:`captum_fam.metrics.reference_specificity`
      of plain FAM maps (both objects' maps hit their own object); 0 for the agnostic map;
    - ``agnostic_correlation_{embedding}_{weighting}``: mean Pearson correlation between plain
      FAM maps and the agnostic map, over scenes and both objects;
    - ``agnostic_same_peak_{embedding}_{weighting}``: share of plain FAM maps whose maximum is
      in the same cell as the agnostic map's;
    - ``negative_weights_{embedding}``: mean share of channels with a negative "reference"
      weight (the "contribution" weights have the same signs: activations are >= 0);
    - ``uniform_cosine_{embedding}_{weighting}``: mean cosine between the channel weights and
      the all-ones vector (1 means the map is the agnostic map up to scale);
    - ``reference_weight_cosine_{embedding}_{weighting}``: mean cosine between the channel
      weights of a scene's two references (1 means both objects get the same map);
    - ``row_ratio_bottom_top``, ``centre_border_ratio``: positional bias of the activations
      (mean activation of the bottom row over the top row; of the inner half over the rest).
    """
    n_cls = len(SHAPE_CLASSES)
    activations = layer_activations(model, layer, scenes.images)
    agnostic = activations.mean(dim=1, keepdim=True)
    hits = [pointing_game(agnostic, scenes.masks[:, k]) for k in range(2)]
    out = {
        "pointing_agnostic_object1": float(hits[0].float().mean()),
        "pointing_agnostic_object2": float(hits[1].float().mean()),
        "pointing_agnostic_either": float((hits[0] | hits[1]).float().mean()),
    }
    pooled = activations.mean(dim=(2, 3))
    for embedding in ("output", "layer"):
        fam_space = FeatureActivationMap(model, layer, embedding=embedding)
        protos = _space_prototypes(fam_space, support_images, support_labels, n_cls)
        references = [protos[scenes.labels[:, k]] for k in range(2)]
        weights = torch.cat(
            [_channel_weights(model, layer, scenes.images, r, embedding) for r in references]
        )
        out[f"negative_weights_{embedding}"] = float((weights < 0).float().mean())
        for weighting in ("reference", "contribution"):
            fam = FeatureActivationMap(model, layer, embedding=embedding, weighting=weighting)
            maps = [fam.attribute(scenes.images, reference_embeddings=r) for r in references]
            both = torch.cat(maps)
            key = f"{embedding}_{weighting}"
            out[f"specificity_{key}"] = float(
                reference_specificity(scenes.masks, maps=(maps[0], maps[1])).float().mean()
            )
            repeated = torch.cat([agnostic, agnostic])
            correlation = position_correlation(both, repeated).nan_to_num(0.0)
            out[f"agnostic_correlation_{key}"] = float(correlation.mean())
            same_peak = both.flatten(1).argmax(1) == repeated.flatten(1).argmax(1)
            out[f"agnostic_same_peak_{key}"] = float(same_peak.float().mean())
            w = weights if weighting == "reference" else weights * torch.cat([pooled, pooled])
            uniform = F.cosine_similarity(w, torch.ones_like(w), dim=1)
            out[f"uniform_cosine_{key}"] = float(uniform.mean())
            w_a, w_b = w.chunk(2)
            out[f"reference_weight_cosine_{key}"] = float(F.cosine_similarity(w_a, w_b).mean())
    cells = activations.mean(dim=(0, 1))  # (h, w): mean activation of each map cell
    out["row_ratio_bottom_top"] = float(cells[-1].mean() / cells[0].mean())
    height, width = cells.shape
    inner = torch.zeros(height, width, dtype=torch.bool)
    inner[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    out["centre_border_ratio"] = float(cells[inner].mean() / cells[~inner].mean())
    return out
