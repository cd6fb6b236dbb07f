"""``captum-fam explain``'s option parsing, preprocessing choices, notices and map files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_fam.cli import options
from captum_fam.cli.common import CLIError
from captum_fam.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from captum_fam.models import load_model
from captum_fam.tokens import TokenLayout


def namespace(**values) -> argparse.Namespace:
    defaults = {"image_size": None, "resize": None, "normalize": None, "model": "m"}
    return argparse.Namespace(**{**defaults, **values})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("imagenet", (IMAGENET_MEAN, IMAGENET_STD)),
        ("none", (None, None)),
        ("0.5,0.25", ((0.5,) * 3, (0.25,) * 3)),
        ("0.1,0.2,0.3,1,2,3", ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))),
    ],
)
def test_normalization(text: str, expected) -> None:
    assert options.normalization(text) == expected


@pytest.mark.parametrize("text", ["", "0.5", "a,b", "1,2,3"])
def test_bad_normalization(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="MEAN,STD"):
        options.normalization(text)


def test_token_layout() -> None:
    assert options.token_layout("auto") == "auto"
    assert options.token_layout("none") == "none"
    assert options.token_layout("channels-last") == TokenLayout(channels_last=True)
    assert options.token_layout("prefix=5") == TokenLayout(prefix_tokens=5)
    with pytest.raises(argparse.ArgumentTypeError, match="prefix=N"):
        options.token_layout("prefix=x")


def test_preprocessing_overrides() -> None:
    base = Preprocess(224, resize="crop", resize_size=256)
    assert options.preprocessing(base, namespace()) is base
    smaller = options.preprocessing(base, namespace(image_size=112))
    assert (smaller.size, smaller.resize_size) == (112, 128)
    kept = options.preprocessing(base, namespace(resize="keep", normalize=(None, None)))
    assert (kept.resize, kept.resize_size, kept.mean, kept.std) == ("keep", None, None, None)
    with pytest.raises(CLIError, match="preprocessing: size must be an int >= 8"):
        options.preprocessing(base, namespace(image_size=4))
    own = Preprocess(transform=lambda image: torch.zeros(3, 8, 8))
    with pytest.raises(CLIError, match="its own preprocessing transform; --resize cannot"):
        options.preprocessing(own, namespace(resize="keep"))


def test_toy_model_notice_rule() -> None:
    shapes = load_model("shapes")
    args = argparse.Namespace(query="q.png", references=["r.png"])
    world = Image.new("RGB", (64, 64))
    assert options.notices(shapes, args, [world, Image.new("RGB", (32, 32))]) == []
    for foreign in (Image.new("RGB", (64, 48)), Image.new("RGB", (256, 256))):
        (notice,) = options.notices(shapes, args, [world, foreign])
        assert notice.startswith("TOY MODEL") and "r.png" in notice


def test_save_maps_of_different_sizes(tmp_path: Path) -> None:
    record = {
        "maps": torch.rand(2, 1, 4, 4),
        "reference_maps": [torch.rand(1, 4, 4), torch.rand(1, 4, 6)],
        "references": ["a", "b"],
    }
    options.save_maps(tmp_path / "m.pt", "torch", record)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert [m.shape for m in saved["reference_maps"]] == [(1, 4, 4), (1, 4, 6)]
    options.save_maps(tmp_path / "m.npz", "numpy", record)
    with np.load(tmp_path / "m.npz") as arrays:
        assert arrays["reference_maps_1"].shape == (1, 4, 6)
        assert arrays["references"].tolist() == ["a", "b"]
