"""``captum-fam explain``: references, gallery, models, preprocessing, notices and bad input."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from captum_fam import FeatureActivationMap
from captum_fam.cli.main import main
from captum_fam.models import load_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR_PREFIX = "captum-fam: error: "


def explain(*args: str | Path) -> list[str]:
    return ["explain", *map(str, args)]


def svg_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep text as text in SVG figures, so that a test can read a figure's words."""
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")


def test_explain_subprocess_saves_figure_and_torch_maps(
    run_cli, files: Path, tmp_path: Path
) -> None:
    maps_file = tmp_path / "maps.pt"
    result = run_cli(
        *explain(files / "query.png", files / "ref_a.png", files / "ref_b.png"),
        "--out",
        str(tmp_path / "out.png"),
        "--save-maps",
        str(maps_file),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").read_bytes()[:8] == PNG_SIGNATURE
    saved = torch.load(maps_file, weights_only=True)
    assert saved["references"] == ["ref_a.png", "ref_b.png"]
    assert saved["query"] == "query.png"
    assert saved["maps"].shape == (2, 1, 8, 8)  # 64 px through a stride-8 layer
    assert saved["reference_maps"].shape == (2, 1, 8, 8)
    assert saved["scores"].shape == (2,)
    assert (saved["layer"], saved["similarity"], saved["weighting"]) == (
        "block4",
        "cosine",
        "reference",
    )
    for name, score in zip(saved["references"], saved["scores"].tolist(), strict=True):
        assert f"{name}  cosine {score:.4f}" in result.stdout
    # The shapes world's own 32 px scenes raise no toy-model notice.
    assert "TOY MODEL" not in result.stderr


def test_explain_in_process_npz_matches_the_library(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maps_file = tmp_path / "maps.npz"
    paths = [files / "query.png", files / "ref_a.png", files / "ref_b.png"]
    argv = [*explain(*paths), "--out", str(tmp_path / "out.png")]
    argv += ["--similarity", "dot", "--weighting", "contribution", "--save-maps", str(maps_file)]
    assert main(argv) == 0
    assert f"figure: {tmp_path / 'out.png'}" in capsys.readouterr().out

    with np.load(maps_file) as saved:  # no allow_pickle needed
        assert saved["references"].tolist() == ["ref_a.png", "ref_b.png"]
        assert saved["maps"].shape == (2, 1, 8, 8)
        maps, scores = torch.from_numpy(saved["maps"]), torch.from_numpy(saved["scores"])
        assert str(saved["similarity"]) == "dot"

    loaded = load_model("shapes")
    fam = FeatureActivationMap(
        loaded.model, loaded.layer, similarity="dot", weighting="contribution"
    )
    batch = loaded.preprocess.load(paths)
    query = batch[:1].expand(2, -1, -1, -1)
    torch.testing.assert_close(scores, fam.similarity_scores(query, reference=batch[1:]))
    torch.testing.assert_close(maps, fam.attribute(query, reference=batch[1:]))


def test_gallery_top_k(files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    maps_file = tmp_path / "top.npz"
    argv = explain(files / "query.png", "--gallery", files / "gallery")
    argv += ["--top-k", "2", "--batch-size", "2", "--out", str(tmp_path / "top.png")]
    assert main([*argv, "--save-maps", str(maps_file)]) == 0
    captured = capsys.readouterr()
    assert "gallery" in captured.out and "4 images, 1 unreadable skipped" in captured.out
    assert "embedding gallery" in captured.err  # the progress bar
    with np.load(maps_file) as saved:
        names, scores = saved["references"].tolist(), saved["scores"]
        assert saved["maps"].shape == (2, 1, 8, 8)
    assert len(names) == 2
    assert set(names) <= {"item2.png", "item3.png", "item4.png", "sub/item5.png"}
    assert scores[0] >= scores[1]
    assert (tmp_path / "top.png").stat().st_size > 0

    # The retrieved items and their maps are those of the library on the same images.
    loaded = load_model("shapes")
    fam = FeatureActivationMap(loaded.model, loaded.layer)
    query = loaded.preprocess.load([files / "query.png"]).expand(2, -1, -1, -1)
    items = loaded.preprocess.load([files / "gallery" / name for name in names])
    torch.testing.assert_close(
        torch.from_numpy(scores), fam.similarity_scores(query, reference=items)
    )
    every = loaded.preprocess.load(sorted((files / "gallery").rglob("item*.png")))
    best = fam.similarity_scores(query[:1].expand(4, -1, -1, -1), reference=every).max()
    torch.testing.assert_close(torch.tensor(scores[0]), best)


def test_background_contrast_and_the_reference_dependence_line(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maps_file = tmp_path / "contrast.pt"
    paths = [files / "query.png", files / "ref_a.png"]
    argv = [*explain(*paths), "--out", str(tmp_path / "out.png"), "--save-maps", str(maps_file)]
    assert main([*argv, "--background", str(files / "gallery")]) == 0
    out = capsys.readouterr().out
    assert "contrast: each map explains the score minus the mean score against 4 background" in out
    assert "reference dependence: ok (maps correlate" in out
    saved = torch.load(maps_file)
    assert len(saved["background"]) == 4 and saved["agnostic_correlation"].shape == (1,)

    loaded = load_model("shapes")
    fam = FeatureActivationMap(loaded.model, loaded.layer)
    batch = loaded.preprocess.load(paths)
    ordinary = loaded.preprocess.load(sorted((files / "gallery").rglob("item*.png")))
    expected = fam.attribute(batch[:1], reference=batch[1:], background=ordinary)
    torch.testing.assert_close(saved["maps"], expected)
    assert main([*argv, "--background", str(files / "empty")]) == 2  # bad input
    assert "--background" in capsys.readouterr().err


def test_torchvision_resnet18_random_weights_say_so(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torchvision")
    svg_text(monkeypatch)
    maps_file, figure = tmp_path / "resnet.pt", tmp_path / "resnet.svg"
    argv = explain(files / "query.png", files / "ref_a.png", "--model", "torchvision:resnet18")
    argv += ["--image-size", "64", "--out", str(figure), "--save-maps", str(maps_file)]
    assert main(argv) == 2  # no weights named: an error that says how to choose
    err = capsys.readouterr().err
    assert "needs --weights" in err and "--weights none" in err and "DEFAULT" in err

    assert main([*argv, "--weights", "none"]) == 0
    captured = capsys.readouterr()
    assert "layer layer4" in captured.out and "(RANDOM WEIGHTS)" in captured.out
    assert "classifier fc replaced by Identity" in captured.out
    assert "compared: the model's output, 512 values" in captured.out
    assert captured.err.count("RANDOM WEIGHTS") == 1
    assert "RANDOM WEIGHTS" in figure.read_text()
    saved = torch.load(maps_file, weights_only=True)
    assert saved["layer"] == "layer4" and saved["random_weights"] is True
    assert saved["maps"].shape == (1, 1, 2, 2)  # 64 px at stride 32


def test_default_model_on_a_photo_says_it_is_a_toy(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    svg_text(monkeypatch)
    photo = tmp_path / "photo.jpg"
    noise = np.random.default_rng(1).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    Image.fromarray(noise).save(photo)
    figure = tmp_path / "toy.svg"
    assert main(explain(photo, files / "ref_a.png", "--out", figure)) == 0
    err = capsys.readouterr().err
    assert "TOY MODEL" in err and "photo.jpg (400x300)" in err
    assert "--model torchvision:resnet50 --weights DEFAULT" in err
    assert "TOY MODEL" in figure.read_text()


def test_single_position_layer_warns(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = explain(files / "query.png", files / "ref_a.png", "--layer", "pool")
    assert main([*argv, "--out", str(tmp_path / "pool.png")]) == 0
    err = capsys.readouterr().err
    assert "captum-fam: warning: layer pool gives 1x1 maps" in err
    assert "choose a convolutional block with --layer (e.g. block" in err


def test_transparent_image_is_composited_with_one_warning(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rgba = tmp_path / "cutout.png"
    pixels = np.zeros((64, 64, 4), dtype=np.uint8)
    pixels[16:48, 16:48] = (200, 30, 30, 255)  # an opaque square on a transparent (black) field
    Image.fromarray(pixels, "RGBA").save(rgba)
    argv = explain(files / "query.png", rgba, rgba, "--out", tmp_path / "rgba.png")
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("has transparency: composited onto the RGB background") == 1


def _write_module(directory: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> str:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


FACE_NET = """
    import torch
    from torch import nn
    from captum_fam.images import Preprocess

    SEEN = []  # (min, max) of every input the network received

    class FaceNet(nn.Module):
        \"\"\"Takes RGB in [0, 1] and normalises inside, like many face networks.\"\"\"

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=4, padding=1), nn.ReLU())

        def forward(self, x):
            SEEN.append((float(x.min()), float(x.max())))
            return self.block(self.stem((x - 0.5) / 0.5)).mean(dim=(2, 3))

    def plain():
        return FaceNet()

    def declared():
        return FaceNet(), Preprocess(32, resize="keep", mean=None, std=None)
"""


@pytest.mark.parametrize("how", ["declared", "options"])
def test_face_network_without_imagenet_normalisation_keeps_aspect(
    how: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = _write_module(tmp_path, f"facenet_{how}", FACE_NET, monkeypatch)
    wide = tmp_path / "wide.png"  # 96 x 48: twice as wide as high
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 96, 3), dtype=np.uint8)).save(
        wide
    )
    maps_file = tmp_path / "face.pt"
    argv = explain(wide, wide, "--out", tmp_path / "face.png")
    argv += ["--save-maps", str(maps_file), "--layer", "block"]
    if how == "declared":
        argv += ["--model", f"{module}:declared"]
    else:
        argv += ["--model", f"{module}:plain", "--normalize", "none", "--resize", "keep"]
        argv += ["--image-size", "32"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "preprocessing: shorter side to 32 px, aspect ratio kept (no crop); RGB in [0, 1]" in out
    seen = sys.modules[module].SEEN
    assert seen and all(low >= 0.0 and high <= 1.0 for low, high in seen)
    saved = torch.load(maps_file, weights_only=True)
    assert saved["maps"].shape == (1, 1, 8, 16)  # 32 x 64 input at stride 4: still 1:2
    assert "RGB in [0, 1]" in saved["preprocessing"]


def test_factory_default_preprocessing_is_stated(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _write_module(tmp_path, "facenet_default", FACE_NET, monkeypatch)
    argv = explain(files / "query.png", files / "ref_a.png", "--model", f"{module}:plain")
    assert main([*argv, "--layer", "block", "--out", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "preprocessing: shorter side to 224 px, centre crop 224x224 px; ImageNet mean/std" in out


TRANSFORMERS = """
    import torch
    from torchvision.models import SwinTransformer, VisionTransformer

    from captum_fam.backbones import strip_classifier

    def vit_classifier():
        torch.manual_seed(0)
        return VisionTransformer(
            image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32
        )

    def vit():
        return strip_classifier(vit_classifier())

    def swin():
        torch.manual_seed(0)
        return strip_classifier(SwinTransformer(
            patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=[2, 2]
        ))
"""


def test_transformers_default_layers_and_token_layout(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torchvision")
    module = _write_module(tmp_path, "small_transformers", TRANSFORMERS, monkeypatch)
    pair = explain(files / "query.png", files / "ref_a.png", "--image-size", "32")
    out = ["--out", str(tmp_path / "t.png"), "--save-maps", str(tmp_path / "t.pt")]

    assert main([*pair, *out, "--model", f"{module}:vit"]) == 0
    captured = capsys.readouterr()
    assert "layer encoder.layers.encoder_layer_1" in captured.out  # the block before the last
    assert "still has its classifier" not in captured.err
    assert torch.load(tmp_path / "t.pt", weights_only=True)["maps"].shape == (1, 1, 4, 4)

    assert main([*pair, *out, "--model", f"{module}:vit", "--token-layout", "none"]) == 2
    err = capsys.readouterr().err
    assert "outputs tokens" in err and "pass --token-layout auto" in err

    # A factory is used as given; one that keeps its classifier is told what it compares.
    assert main([*pair, *out, "--model", f"{module}:vit_classifier"]) in (0, 2)
    assert "still has its classifier (heads.head)" in capsys.readouterr().err

    assert main([*pair, *out, "--model", f"{module}:swin"]) == 0
    assert "layer features" in capsys.readouterr().out
    assert torch.load(tmp_path / "t.pt", weights_only=True)["maps"].shape == (1, 1, 4, 4)

    assert main([*pair, *out, "--model", f"{module}:swin", "--token-layout", "none"]) == 0
    assert "pass --token-layout channels-last (or auto)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.png", "ref_a.png"], "image not found"),
        (["query.png", "gallery/broken.png"], "cannot read image"),
        (["query.png", "ref_a.png", "--layer", "blok4"], "closest: block4"),
        (["query.png", "ref_a.png", "--model", "nonsense"], "unknown model 'nonsense'"),
        (["query.png", "ref_a.png", "--model", "torch.nn:Identity"], "pass --layer"),
        (["query.png", "--gallery", "empty"], "holds no images"),
        (["query.png", "ref_a.png", "--save-maps", "maps.csv"], "unsupported extension"),
        (["query.png", "ref_a.png", "--weights", "DEFAULT"], "torchvision:NAME models only"),
        (["query.png"], "at least one REFERENCE"),
        (["query.png", "ref_a.png", "--top-k", "3"], "--top-k ranks a --gallery DIR"),
        (["query.png", "tiny.png"], "image too small: tiny.png is 1x1 px"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str],
    expected: str,
    files: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(files)
    Image.new("RGB", (1, 1), (255, 0, 0)).save(files / "tiny.png")
    assert main(["explain", *args, "--out", str(tmp_path / "out.png")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), captured.err
    assert expected in lines[0]
    assert captured.out == ""
    assert not (tmp_path / "out.png").exists()
