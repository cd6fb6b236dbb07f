"""Every listed torchvision family: stripping its classifier leaves the pooled features it read,
and its default layer runs with the right layout. Random weights, small inputs."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.backbones import (
    CLASSIFIER_LAYERS,
    DEFAULT_LAYERS,
    candidate_layers,
    classifier_name,
    default_layer,
    family,
    strip_classifier,
)

models = pytest.importorskip("torchvision.models")


def small_transformer(name: str) -> nn.Module:
    if name == "vit":
        return models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32
        )
    if name == "swin":
        return models.SwinTransformer(
            patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2]
        )
    return models.MaxVit(
        input_size=(32, 32),
        stem_channels=8,
        partition_size=2,
        block_channels=[8, 16],
        block_layers=[1, 1],
        head_dim=4,
        stochastic_depth_prob=0.0,
    )


# One model per family (the smallest variant), the input side it needs, and the shape of the
# default layer's output: "maps" (N, C, h, w), "tokens" (N, T, C) or "channels-last".
FAMILIES = {
    "resnet18": ("ResNet", 32, "maps"),
    "resnext50_32x4d": ("ResNet", 32, "maps"),
    "vgg11": ("VGG", 32, "maps"),
    "alexnet": ("AlexNet", 64, "maps"),
    "densenet121": ("DenseNet", 32, "maps"),
    "mobilenet_v2": ("MobileNetV2", 32, "maps"),
    "mobilenet_v3_small": ("MobileNetV3", 32, "maps"),
    "efficientnet_b0": ("EfficientNet", 32, "maps"),
    "convnext_tiny": ("ConvNeXt", 32, "maps"),
    "mnasnet0_5": ("MNASNet", 32, "maps"),
    "regnet_y_400mf": ("RegNet", 32, "maps"),
    "googlenet": ("GoogLeNet", 32, "maps"),
    "inception_v3": ("Inception3", 75, "maps"),
    "shufflenet_v2_x0_5": ("ShuffleNetV2", 32, "maps"),
    "squeezenet1_1": ("SqueezeNet", 32, "maps"),
    "vit": ("VisionTransformer", 32, "tokens"),
    "swin": ("SwinTransformer", 32, "channels-last"),
    "maxvit": ("MaxVit", 32, "maps"),
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name in ("vit", "swin", "maxvit"):
        return small_transformer(name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # GoogLeNet's and Inception's init notice
        return models.get_model(name, weights=None).eval()


def test_every_family_is_listed_twice() -> None:
    listed = {cls for cls, _, _ in FAMILIES.values()}
    assert listed == set(CLASSIFIER_LAYERS) == set(DEFAULT_LAYERS)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_stripped_output_is_the_penultimate_features(name: str) -> None:
    expected_family, side, layout = FAMILIES[name]
    model = build(name)
    assert family(model) == expected_family
    head = classifier_name(model)
    choice = default_layer(model)
    assert head is not None and choice is not None
    assert choice.token_layout == (None if layout == "maps" else "auto")

    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(head).register_forward_pre_hook(
            lambda module, args: captured.setdefault("features", args[0])
        ),
        model.get_submodule(choice.name).register_forward_hook(
            lambda module, args, output: captured.setdefault("layer", output)
        ),
    ]
    images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
    for hook in hooks:
        hook.remove()
    assert logits.shape == (2, 1000)

    assert strip_classifier(model) is model
    assert isinstance(model.get_submodule(head), nn.Identity)
    with torch.no_grad():
        features = model(images)
    expected = captured["features"]
    if expected.dim() == 4:  # SqueezeNet classifies each position with a 1x1 convolution
        expected = expected.mean(dim=(2, 3))
    assert features.dim() == 2 and features.shape[0] == 2
    torch.testing.assert_close(features, expected)

    layer = captured["layer"]
    assert layer.dim() == (3 if layout == "tokens" else 4)
    if layout == "channels-last":
        assert layer.shape[1] == layer.shape[2] and layer.shape[3] > layer.shape[1]
    # The default layer feeds the stripped output: FAM on it runs.
    fam = FeatureActivationMap(
        model,
        model.get_submodule(choice.name),
        token_layout=choice.token_layout,
        embedding="output",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the dropped class token
        maps = fam.attribute(images, reference=images.flip(0))
    assert maps.shape[:2] == (2, 1) and torch.isfinite(maps).all()


def test_strip_is_idempotent_and_leaves_unknown_models_alone() -> None:
    model = strip_classifier(build("resnet18"))
    assert classifier_name(model) is None
    assert strip_classifier(model) is model and isinstance(model.fc, nn.Identity)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 2))
    assert family(plain) is None and classifier_name(plain) is None
    assert default_layer(plain) is None
    assert strip_classifier(plain)[1].out_features == 2


def test_subclasses_are_recognised() -> None:
    class Mine(models.ResNet):
        pass

    model = Mine(models.resnet.BasicBlock, [1, 1, 1, 1])
    assert family(model) == "ResNet"
    assert default_layer(model) == ("layer4", None)


def test_candidate_layers_are_shallow_and_convolutional() -> None:
    names = candidate_layers(build("resnet18"))
    assert names[-1] == "layer4.1" and all(name.count(".") <= 1 for name in names)
    assert candidate_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU())) == ["0", "1"]


ARCHITECTURES = {
    "resnet18": lambda m: m.layer4,
    "resnet50": lambda m: m.layer4,
    "vgg11_bn": lambda m: m.features,
    "densenet121": lambda m: m.features,
    "mobilenet_v3_small": lambda m: m.features,
    "efficientnet_b0": lambda m: m.features,
    "convnext_tiny": lambda m: m.features,
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_fam_on_full_size_backbones(name):
    """The default (the stripped model's pooled features) and the layer's own complete maps."""
    torch.manual_seed(0)
    model = strip_classifier(models.get_model(name, weights=None).eval())
    layer = ARCHITECTURES[name](model)
    queries = torch.rand(2, 3, 64, 64)
    references = torch.rand(1, 3, 64, 64)

    fam = FeatureActivationMap(model, layer)
    maps = fam.attribute(queries, reference=references)
    assert maps.dim() == 4 and maps.shape[:2] == (2, 1)
    assert torch.isfinite(maps).all() and (maps >= 0).all()

    # The pooled layer's own similarity decomposes exactly (P1); a classifier's logits do not.
    complete = FeatureActivationMap(model, layer, embedding="layer")
    raw = complete.attribute(
        queries, reference=references, relu_attributions=False, normalize_weights=False
    )
    scores = complete.similarity_scores(queries, reference=references)
    torch.testing.assert_close(raw.mean(dim=(1, 2, 3)), scores, atol=1e-5, rtol=1e-4)
    assert ((scores >= -1 - 1e-6) & (scores <= 1 + 1e-6)).all()
