"""Reading image files (transparency, size) and the preprocessing between files and models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_fam.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageReadError,
    Preprocess,
    list_images,
    read_image,
)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_transparent_pixels_are_composited_onto_the_background(tmp_path: Path) -> None:
    pixels = np.zeros((10, 10, 4), dtype=np.uint8)
    pixels[:5] = (200, 0, 0, 255)  # opaque red
    pixels[5:] = (0, 0, 200, 0)  # fully transparent, storing blue
    pixels[9, 9] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(pixels, "RGBA").save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="has transparency: composited onto the RGB background"):
        image = read_image(tmp_path / "a.png")
    array = np.asarray(image)
    assert image.mode == "RGB"
    assert tuple(array[0, 0]) == (200, 0, 0)
    assert tuple(array[6, 0]) == (255, 255, 255)  # not the stored blue
    assert tuple(array[9, 9]) == (127, 127, 127)
    with pytest.warns(UserWarning):
        black = np.asarray(read_image(tmp_path / "a.png", background=(0, 0, 0)))
    assert tuple(black[6, 0]) == (0, 0, 0)


def test_palette_transparency_is_composited_too(tmp_path: Path) -> None:
    image = Image.new("P", (12, 12), 0)
    image.putpalette([0, 255, 0] + [255, 0, 0] * 255)
    image.save(tmp_path / "p.png", transparency=0)
    with pytest.warns(UserWarning, match="transparency"):
        assert tuple(np.asarray(read_image(tmp_path / "p.png"))[0, 0]) == (255, 255, 255)


def test_opaque_images_read_without_warning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    noise(20, 10).save(tmp_path / "n.jpg")
    assert read_image(tmp_path / "n.jpg").size == (20, 10)
    assert not recwarn.list


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing.png", "image not found"),
        (lambda d: d, "got a directory"),
        (lambda d: (d / "t.txt").write_text("x") and d / "t.txt", "cannot read image"),
        (lambda d: Image.new("RGB", (1, 1)).save(d / "one.png") or d / "one.png", "1x1 px"),
        (lambda d: Image.new("RGB", (40, 7)).save(d / "thin.png") or d / "thin.png", "40x7 px"),
    ],
)
def test_unusable_files_raise_an_error_naming_them(make, expected: str, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=expected) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_truncated_file_fails_at_read_time(tmp_path: Path) -> None:
    noise(64, 64).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cannot read image"):
        read_image(tmp_path / "cut.png")


def test_list_images_recurses_and_filters(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    noise(8, 8).save(tmp_path / "b.png")
    noise(8, 8).save(tmp_path / "sub" / "a.JPG")
    (tmp_path / "notes.txt").write_text("x")
    assert list_images(tmp_path) == [tmp_path / "b.png", tmp_path / "sub" / "a.JPG"]
    with pytest.raises(ImageReadError, match="not a directory"):
        list_images(tmp_path / "b.png")


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0", "vit_b_16"])
def test_crop_matches_torchvision_weight_transforms(name: str) -> None:
    models = pytest.importorskip("torchvision.models")
    preset = models.get_model_weights(name).DEFAULT.transforms()
    preprocess = Preprocess.from_torchvision(preset)
    for image in (noise(333, 250), noise(250, 401, seed=1)):
        torch.testing.assert_close(preprocess(image), preset(image), atol=1e-6, rtol=0)


def test_resize_modes() -> None:
    wide = noise(90, 45)
    assert Preprocess(30, resize="squash")(wide).shape == (3, 30, 30)
    assert Preprocess(30, resize="crop")(wide).shape == (3, 30, 30)
    assert Preprocess(30, resize="keep")(wide).shape == (3, 30, 60)
    # crop keeps the centre of the shorter side's square: the same pixels as a manual crop.
    plain = Preprocess(45, resize="crop", mean=None, std=None)(wide)
    manual = torch.from_numpy(np.asarray(wide, dtype=np.float32)[:, 22:67] / 255).permute(2, 0, 1)
    torch.testing.assert_close(plain, manual)
    with pytest.raises(ValueError, match="more than 8 times longer"):
        Preprocess(16, resize="keep")(noise(400, 20))


def test_normalisation_and_display_round_trip() -> None:
    image = noise(32, 32)
    raw = Preprocess(32, resize="squash", mean=None, std=None)
    normalised = Preprocess(32, resize="squash")
    assert raw(image).min() >= 0 and raw(image).max() <= 1
    expected = (raw(image) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(
        IMAGENET_STD
    ).view(3, 1, 1)
    torch.testing.assert_close(normalised(image), expected)
    torch.testing.assert_close(normalised.display(normalised(image)), raw(image), atol=1e-6, rtol=0)


def test_descriptions_state_every_choice() -> None:
    assert Preprocess(224, resize_size=256).description == (
        "shorter side to 256 px, centre crop 224x224 px; ImageNet mean/std"
    )
    assert Preprocess(64, resize="squash", mean=None, std=None).description == (
        "resized to 64x64 px (aspect ratio not kept); RGB in [0, 1], no normalisation"
    )
    assert Preprocess(112, resize="keep", mean=(0.5,) * 3, std=(0.25,) * 3).description == (
        "shorter side to 112 px, aspect ratio kept (no crop); mean (0.5, 0.5, 0.5), "
        "std (0.25, 0.25, 0.25)"
    )
    assert "bicubic" in Preprocess(interpolation="bicubic").description


def test_resized_keeps_the_crop_margin() -> None:
    assert Preprocess(224, resize_size=256).resized(112).resize_size == 128
    assert Preprocess(224).resized(64).resize_size is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"size": 4}, "size must be an int >= 8"),
        ({"resize": "fit"}, "resize must be one of"),
        ({"resize_size": 100}, "at least size"),
        ({"mean": None}, "give both mean and std"),
        ({"mean": (0.5, 0.5)}, "3 values"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"interpolation": "lanczos"}, "interpolation must be one of"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Preprocess(**kwargs)


def test_a_models_own_transform() -> None:
    def to_tensor(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) - 128

    own = Preprocess(transform=to_tensor, label="to_tensor - 128")
    image = noise(20, 10)
    assert own(image).shape == (3, 10, 20)
    assert own.description == "to_tensor - 128"
    shown = own.display(own(image))
    assert float(shown.min()) == 0.0 and float(shown.max()) == 1.0
    with pytest.raises(ValueError, match="fixes the input size"):
        own.resized(32)
    with pytest.raises(ValueError, match=r"must return a \(3, H, W\) tensor"):
        Preprocess(transform=lambda image: torch.zeros(1, 4, 4))(image)


def test_load_refuses_mixed_sizes(tmp_path: Path) -> None:
    noise(40, 20).save(tmp_path / "wide.png")
    noise(20, 40).save(tmp_path / "tall.png")
    paths = [tmp_path / "wide.png", tmp_path / "tall.png"]
    assert Preprocess(16, resize="crop").load(paths).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="different sizes"):
        Preprocess(16, resize="keep").load(paths)
