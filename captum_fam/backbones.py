"""Known backbones: which layer to explain by default, and classifiers as feature extractors.

An ImageNet classifier returns 1,000 logits. Comparing logits is not what someone who uses the
network as a feature extractor means by "similar", so :func:`strip_classifier` replaces the
final classification layer with ``nn.Identity``: the model then returns the pooled features
that the classifier would read (2-D, ``(N, D)``). :func:`default_layer` names the layer whose
activation maps FAM combines: the last convolutional block, or for transformers the block (or
stage) to read as a grid, with the token layout to read it with.

Families are recognised by their torchvision class (``ResNet`` also covers ResNeXt and Wide
ResNet), also for subclasses and for models built outside ``torchvision.models.get_model``.

Examples::

    >>> import torchvision
    >>> from captum_fam import FeatureActivationMap
    >>> from captum_fam.backbones import default_layer, strip_classifier
    >>> model = strip_classifier(torchvision.models.resnet50().eval())   # output (N, 2048)
    >>> choice = default_layer(model)                                   # ('layer4', None)
    >>> fam = FeatureActivationMap(model, model.get_submodule(choice.name),
    ...                            token_layout=choice.token_layout)
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

__all__ = [
    "CLASSIFIER_LAYERS",
    "DEFAULT_LAYERS",
    "LayerChoice",
    "candidate_layers",
    "classifier_name",
    "default_layer",
    "family",
    "strip_classifier",
]

CLASSIFIER_LAYERS: dict[str, str] = {
    "ResNet": "fc",  # also ResNeXt and Wide ResNet
    "RegNet": "fc",
    "GoogLeNet": "fc",
    "Inception3": "fc",
    "ShuffleNetV2": "fc",
    "DenseNet": "classifier",
    "VGG": "classifier.-1",
    "AlexNet": "classifier.-1",
    "MobileNetV2": "classifier.-1",
    "MobileNetV3": "classifier.-1",
    "EfficientNet": "classifier.-1",
    "ConvNeXt": "classifier.-1",
    "MNASNet": "classifier.-1",
    "MaxVit": "classifier.-1",
    "SqueezeNet": "classifier.1",  # a 1x1 convolution; global pooling follows it
    "VisionTransformer": "heads.head",
    "SwinTransformer": "head",
}
"""The final classification layer of each torchvision family (``-1``: the last child)."""

DEFAULT_LAYERS: dict[str, str] = {
    "ResNet": "layer4",
    "VGG": "features",
    "AlexNet": "features",
    "DenseNet": "features",
    "MobileNetV2": "features",
    "MobileNetV3": "features",
    "EfficientNet": "features",
    "ConvNeXt": "features",
    "SqueezeNet": "features",
    "MNASNet": "layers",
    "RegNet": "trunk_output",
    "GoogLeNet": "inception5b",
    "Inception3": "Mixed_7c",
    "ShuffleNetV2": "conv5",
    "MaxVit": "blocks.-1",
    "SwinTransformer": "features",
    "VisionTransformer": "encoder.layers.-2",
}
"""The layer FAM reads by default per torchvision family: the last convolutional block (each
gives a 7x7 map at 224 px; MaxVit's last block), Swin's last stage (channels-last), and the
vision transformer's
second-to-last block: the model's output is its last block's class token, to which the last
block's own patch tokens do not contribute. DenseNet applies its last ReLU functionally, after
``features``, so its map is pre-ReLU; VGG's and AlexNet's ``features`` end with a max-pool."""

_TOKEN_LAYOUTS = {"SwinTransformer": "auto", "VisionTransformer": "auto"}


class LayerChoice(NamedTuple):
    """The layer to explain, by dotted name, and the ``token_layout`` to read it with."""

    name: str
    token_layout: str | None


def family(model: nn.Module) -> str | None:
    """The torchvision family of ``model`` (its class or a base class name), if known."""
    for cls in type(model).__mro__:
        if cls.__name__ in CLASSIFIER_LAYERS or cls.__name__ in DEFAULT_LAYERS:
            return cls.__name__
    return None


def default_layer(model: nn.Module) -> LayerChoice | None:
    r"""The layer FAM should read in a known backbone, or None for an unknown one.

    Args:
        model (nn.Module): A torchvision classification model (or a subclass).

    Returns:
        LayerChoice: ``(name, token_layout)``, the dotted module name (an index such as ``-2``
        resolved) and ``"auto"`` for transformers, None for convolutional maps.
    """
    name = family(model)
    if name is None or name not in DEFAULT_LAYERS:
        return None
    path = _resolve(model, DEFAULT_LAYERS[name])
    return None if path is None else LayerChoice(path, _TOKEN_LAYOUTS.get(name))


def classifier_name(model: nn.Module) -> str | None:
    """Dotted name of the final classification layer of a known family, if still present."""
    name = family(model)
    if name is None or name not in CLASSIFIER_LAYERS:
        return None
    path = _resolve(model, CLASSIFIER_LAYERS[name])
    if path is None:
        return None
    return path if isinstance(model.get_submodule(path), (nn.Linear, nn.Conv2d)) else None


def strip_classifier(model: nn.Module) -> nn.Module:
    r"""Replace the final classification layer of a known backbone with ``nn.Identity``.

    The model then returns the features the classifier would have read: ``(N, D)`` pooled
    features (ResNet's 2048, VGG's 4096 after ``fc7``, ViT's class token after the last layer
    norm), so that a similarity of outputs compares image features, not class logits. Models
    of unknown families, and models already stripped, are returned unchanged.

    Args:
        model (nn.Module): A torchvision classification model (or a subclass); changed in
                    place.

    Returns:
        nn.Module: ``model`` itself.

    Examples::

        >>> model = strip_classifier(torchvision.models.vgg16(weights="DEFAULT").eval())
        >>> model(images).shape                     # torch.Size([N, 4096])
    """
    path = classifier_name(model)
    if path is None:
        return model
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Identity())
    return model


def candidate_layers(model: nn.Module, limit: int = 8) -> list[str]:
    """Names worth suggesting as a layer: the last shallow modules holding a convolution (or,
    for models without one, their top-level children)."""
    shallow = [
        name
        for name, module in model.named_modules()
        if name and name.count(".") <= 1 and any(isinstance(m, nn.Conv2d) for m in module.modules())
    ]
    return shallow[-limit:] or [name for name, _ in model.named_children()][:limit]


def _resolve(model: nn.Module, path: str) -> str | None:
    """A dotted path whose parts may be child indices such as ``-1``, as real module names."""
    module, parts = model, []
    for part in path.split("."):
        children = dict(module.named_children())
        if part.lstrip("-").isdigit() and part not in children:
            names = list(children)
            index = int(part)
            if not -len(names) <= index < len(names):
                return None
            part = names[index]
        if part not in children:
            return None
        module = children[part]
        parts.append(part)
    return ".".join(parts)
