"""Retrieval over image files: batching by size, skipped files, transparency, the top-k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_fam.gallery import Retrieval, embed_images, retrieve
from captum_fam.images import ImageReadError, Preprocess
from captum_fam.models import load_model
from captum_fam.tasks import explain_retrieval


@pytest.fixture(scope="module")
def loaded():
    return load_model("shapes")


def noise(path: Path, width: int, height: int, seed: int, mode: str = "RGB") -> Path:
    channels = 4 if mode == "RGBA" else 3
    pixels = np.random.default_rng(seed).integers(40, 256, (height, width, channels), np.uint8)
    Image.fromarray(pixels, mode).save(path)
    return path


def test_embed_images_batches_by_size_and_keeps_the_order(loaded) -> None:
    fam = loaded.explainer()
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 32, 48 if i % 2 else 32, generator=generator) for i in range(5)]
    rows = embed_images(fam, inputs, batch_size=2)
    expected = torch.cat([fam.embed(x.unsqueeze(0)) for x in inputs])
    torch.testing.assert_close(rows, expected)
    with pytest.raises(ValueError, match="at least one image"):
        embed_images(fam, [])


def test_retrieve_ranks_skips_and_warns_once(loaded, tmp_path: Path) -> None:
    fam = loaded.explainer()
    files = [noise(tmp_path / f"{i}.png", 40, 40, i) for i in range(4)]
    files.append(noise(tmp_path / "alpha1.png", 40, 40, 7, "RGBA"))
    files.append(noise(tmp_path / "alpha2.png", 40, 40, 8, "RGBA"))
    (tmp_path / "broken.png").write_text("no")
    Image.new("RGB", (2, 2)).save(tmp_path / "tiny.png")
    gallery = [*files, tmp_path / "broken.png", tmp_path / "tiny.png"]
    preprocess = loaded.preprocess
    query = preprocess(Image.open(files[2]).convert("RGB")).unsqueeze(0)

    with pytest.warns(UserWarning, match="2 gallery image") as caught:
        found = retrieve(fam, query, gallery, preprocess, top_k=10, batch_size=3, progress=False)
    assert len([w for w in caught if "transparency" in str(w.message)]) == 1
    assert isinstance(found, Retrieval)
    assert found.gallery_size == 6 and len(found.paths) == 6  # top_k clipped to the gallery
    assert found.skipped == [tmp_path / "broken.png", tmp_path / "tiny.png"]
    assert found.paths[0] == files[2]  # the query itself ranks first
    assert found.maps.shape == (6, 1, 8, 8)

    every = torch.stack([preprocess(Image.open(f).convert("RGB")) for f in files[:4]])
    expected = explain_retrieval(fam, query, gallery_embeddings=fam.embed(every), k=4)
    readable = [p for p in found.paths if p in files[:4]]
    assert [files.index(p) for p in readable] == expected.indices[0].tolist()


def test_retrieve_needs_one_readable_file(loaded, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_text("no")
    query = torch.rand(1, 3, 64, 64)
    with pytest.raises(ImageReadError, match="none of the 1 gallery files"):
        retrieve(loaded.explainer(), query, [tmp_path / "a.png"], Preprocess(64), 1, progress=False)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        retrieve(loaded.explainer(), query, [tmp_path / "a.png"], Preprocess(64), 0)
