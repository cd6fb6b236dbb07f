"""The shapes model with a common mode: the failure of layer-space maps, reproduced offline.

Measured on a real face-recognition network (a ResNet whose descriptor is a head over the pooled
last block): maps of the layer's own pooled similarity pointed at chance, following where the
block's activations are large (its bottom row about twice its top), whatever the reference; the
model's own similarity, pulled back through its head, pointed right. The mechanism: post-ReLU
channels that all carry a large shared component, which the head removes before comparing.

:class:`CommonModeNet` builds exactly that around the shipped shapes model: every channel of
its ``layer`` is the shapes model's last block plus a shared offset, scaled by a vertical tilt
(``tilt`` times larger at the bottom than at the top); its head centres and scales the pooled
channels (a layer norm without parameters), so its output, and its similarity, are those of a
working model. It has no trained weights of its own.

Examples::

    >>> from captum_fam.zoo import load_common_mode_model
    >>> model, layer = load_common_mode_model()
    >>> FeatureActivationMap(model, layer)                       # the model's similarity: right
    >>> FeatureActivationMap(model, layer, embedding="layer")    # the layer's: near chance
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_fam.zoo.model import ShapesEmbeddingNet, load_shapes_model
from captum_fam.zoo.shapes import make_shapes

__all__ = ["CommonMode", "CommonModeNet", "load_common_mode_model"]


class CommonMode(nn.Module):
    """``(A + offset) * tilt(row)``: a shared, position-biased component on every channel."""

    def __init__(self, offset: float, tilt: float) -> None:
        super().__init__()
        self.offset = float(offset)
        self.tilt = float(tilt)

    def forward(self, activations: Tensor) -> Tensor:
        rows = activations.shape[-2]
        ramp = torch.linspace(1.0, self.tilt, rows, dtype=activations.dtype,
                              device=activations.device)  # fmt: skip
        return (activations + self.offset) * ramp.view(1, 1, rows, 1)


class CommonModeNet(nn.Module):
    r"""A trunk, a common-mode layer, global average pooling and a centring head.

    Args:
        trunk (ShapesEmbeddingNet): The shapes model (its ``activation_map``).
        offset (float): The shared component added to every channel, in activation units.
        tilt (float): How much larger the layer is at the bottom row than at the top.

    Inputs are RGB images in ``[0, 1]``; the output is the ``(N, C)`` centred, unit-variance
    embedding, compared by cosine.
    """

    def __init__(self, trunk: ShapesEmbeddingNet, offset: float, tilt: float) -> None:
        super().__init__()
        self.trunk = trunk
        self.layer = CommonMode(offset, tilt)

    def forward(self, images: Tensor) -> Tensor:
        pooled = self.layer(self.trunk.activation_map(images)).mean(dim=(2, 3))
        return F.layer_norm(pooled, pooled.shape[1:])


@torch.no_grad()
def load_common_mode_model(
    offset: float = 5.0, tilt: float = 2.0
) -> tuple[CommonModeNet, nn.Module]:
    r"""The shipped shapes model wrapped in :class:`CommonModeNet`.

    Args:
        offset (float, optional): The shared component, in units of the trunk's mean activation
                    on shapes-world scenes. Default: 5.0 (layer maps point at chance)
        tilt (float, optional): Bottom-to-top ratio of the layer's scale. Default: 2.0 (as
                    measured on the face network)

    Returns:
        tuple[CommonModeNet, nn.Module]: ``(model, model.layer)`` in eval mode.
    """
    if offset < 0 or tilt <= 0:
        raise ValueError(f"offset must be >= 0 and tilt > 0; got {offset} and {tilt}")
    trunk, _ = load_shapes_model()
    level = float(trunk.activation_map(make_shapes(64, objects=2, seed=0).images).mean())
    model = CommonModeNet(trunk, offset * level, tilt).eval()
    return model, model.layer
