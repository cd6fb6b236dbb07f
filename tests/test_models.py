"""Model specifications: shapes, torchvision (weights required), factories, TorchScript."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.images import Preprocess
from captum_fam.models import LoadedModel, ModelLoadError, import_factory, load_model


def test_shapes_model() -> None:
    loaded = load_model("shapes")
    assert isinstance(loaded, LoadedModel)
    assert (loaded.layer_name, loaded.label, loaded.random_weights) == ("block4", "shapes", False)
    assert loaded.preprocess == Preprocess(64, resize="squash", mean=None, std=None)
    fam = loaded.explainer(similarity="dot")
    assert isinstance(fam, FeatureActivationMap) and fam.embedding == "output"
    images = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(fam.embed(images), loaded.model(images).detach())
    other = load_model("shapes", layer="block3")
    assert (other.layer is other.model.block3) and other.layer_name == "block3"


@pytest.mark.parametrize(
    ("spec", "weights", "layer", "expected"),
    [
        ("nonsense", None, None, "unknown model 'nonsense'"),
        ("shapes", "DEFAULT", None, "torchvision:NAME models only"),
        ("shapes", None, "blok4", "closest: block4"),
        ("torchvision:resnet18", None, None, "needs --weights: DEFAULT (or IMAGENET1K_V1)"),
        ("torchvision:resnet18", "IMAGENET9K", None, "available: IMAGENET1K_V1, DEFAULT"),
        ("torchvision:resnet81", "none", None, "closest: resnet18"),
        ("torch.nn:Identity", None, None, "pass --layer NAME"),
        ("no_such_module_xyz:build", None, None, "cannot import 'no_such_module_xyz'"),
        ("torch.nn:NoSuchThing", None, None, "has no attribute 'NoSuchThing'"),
        ("missing.pt", None, None, "TorchScript file not found"),
    ],
)
def test_bad_specifications(spec, weights, layer, expected) -> None:
    if spec.startswith("torchvision:"):
        pytest.importorskip("torchvision")
    with pytest.raises(ModelLoadError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_model(spec, weights, layer)


def test_random_torchvision_model_is_marked_and_stripped() -> None:
    pytest.importorskip("torchvision")
    loaded = load_model("torchvision:resnet18", weights="NONE")
    assert loaded.random_weights
    assert isinstance(loaded.model.fc, nn.Identity)
    assert any("classifier fc replaced by Identity" in note for note in loaded.notes)
    assert loaded.layer_name == "layer4" and loaded.token_layout is None
    assert loaded.preprocess == Preprocess(224, resize="crop", resize_size=256)
    assert loaded.model(torch.rand(1, 3, 64, 64)).shape == (1, 512)


def test_named_weights_use_their_own_preprocessing(monkeypatch: pytest.MonkeyPatch) -> None:
    tv = pytest.importorskip("torchvision.models")
    real = tv.get_model
    asked = {}

    def offline(name, weights=None, **kwargs):  # the weights as if cached, without a download
        asked["weights"] = weights
        return real(name, weights=None, **kwargs)

    monkeypatch.setattr(tv, "get_model", offline)
    loaded = load_model("torchvision:efficientnet_b0", weights="EfficientNet_B0_Weights.DEFAULT")
    assert str(asked["weights"]) == "EfficientNet_B0_Weights.IMAGENET1K_V1"
    assert loaded.label == "torchvision:efficientnet_b0 (EfficientNet_B0_Weights.IMAGENET1K_V1)"
    assert not loaded.random_weights
    assert loaded.preprocess.description == (
        "shorter side to 256 px, centre crop 224x224 px, bicubic; ImageNet mean/std"
    )


def test_weights_that_cannot_be_fetched(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tv = pytest.importorskip("torchvision.models")

    def unreachable(name, weights=None, **kwargs):
        print('Downloading: "https://download.pytorch.org/models/x.pth"')  # as torch.hub does
        raise OSError("[Errno -3] Temporary failure in name resolution. More detail.")

    monkeypatch.setattr(tv, "get_model", unreachable)
    with pytest.raises(ModelLoadError, match="cannot fetch torchvision weights .* put the file"):
        load_model("torchvision:resnet18", weights="DEFAULT")
    assert capsys.readouterr() == ("", "")  # the error alone reports it


FACTORIES = """
    import torch
    from torch import nn
    from torchvision.models import resnet18

    from captum_fam.images import Preprocess

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())

        def forward(self, x):
            return self.body(x).mean(dim=(2, 3))

    def pair():
        return Net(), Preprocess(48, resize="keep", mean=None, std=None)

    def attribute():
        net = Net()
        net.preprocess = lambda image: torch.zeros(3, 8, 8)
        return net

    def classifier():
        return resnet18()

    def not_a_module():
        return "model"
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("torchvision")
    (tmp_path / "my_factories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_factories", raising=False)
    return "my_factories"


def test_factories_declare_their_preprocessing(factories: str) -> None:
    declared = load_model(f"{factories}:pair", layer="body")
    assert declared.preprocess == Preprocess(48, resize="keep", mean=None, std=None)
    own = load_model(f"{factories}:attribute", layer="body.1")
    assert own.preprocess.transform is not None
    assert own.preprocess.description.startswith("the model's own transform")
    assert load_model(f"{factories}:pair", layer="body").preprocess.description.startswith(
        "shorter side to 48 px"
    )
    with pytest.raises(ModelLoadError, match="returned str, expected a torch.nn.Module"):
        load_model(f"{factories}:not_a_module")


def test_factory_classifier_is_used_as_given_with_a_warning(factories: str) -> None:
    with pytest.warns(UserWarning, match=r"still has its classifier \(fc\)"):
        loaded = load_model(f"{factories}:classifier")
    assert isinstance(loaded.model.fc, nn.Linear)  # not stripped: factories are used as given
    assert loaded.layer_name == "layer4"


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_whole_file_and_sequential_child(tmp_path: Path) -> None:
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    torch.jit.script(body).save(str(tmp_path / "seq.pt"))
    torch.jit.script(body[:2]).save(str(tmp_path / "maps.pt"))
    images = torch.rand(2, 3, 16, 16)

    whole = load_model(str(tmp_path / "maps.pt"))
    assert whole.embedding == "layer" and "--layer with one of" in whole.hint
    torch.testing.assert_close(whole.explainer().embed(images), body(images).detach())

    child = load_model(str(tmp_path / "seq.pt"), layer="1")
    fam = child.explainer()
    assert fam.embedding == "output"
    assert fam.attribute(images, reference=images.flip(0)).shape == (2, 1, 14, 14)
    with pytest.raises(ModelLoadError, match="cannot be hooked inside"):
        load_model(str(tmp_path / "seq.pt"), layer="0.weight")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="cannot load .* as TorchScript"):
        load_model(str(tmp_path / "junk.pt"))


def test_import_factory_resolves_dotted_callables_and_names_what_is_wrong():
    assert import_factory("torch.nn:Identity") is torch.nn.Identity
    assert import_factory("torch.nn:init.zeros_") is torch.nn.init.zeros_
    with pytest.raises(ModelLoadError, match="cannot import 'no_such_module_xyz'"):
        import_factory("no_such_module_xyz:build")
    with pytest.raises(ModelLoadError, match="has no attribute 'init.nope'"):
        import_factory("torch.nn:init.nope")
    with pytest.raises(ModelLoadError, match="'__name__' is not callable"):
        import_factory("torch.nn:__name__")
