"""Tests of ``captum-fam explain IMAGE --text ...`` (captum_fam.cli.explain_image_text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import save_png

from captum_fam import FeatureActivationMap
from captum_fam.cli.main import main
from captum_fam.metrics import pointing_game
from captum_fam.zoo import SHAPE_CLASSES, load_shapes_clip, make_shapes


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory):
    """A 64 px scene of a triangle and a ring, saved as PNG, with its object masks."""
    batch = make_shapes(1, objects=2, seed=7, classes=["triangle", "ring"])
    path = tmp_path_factory.mktemp("clip") / "scene.png"
    save_png(batch.images[0], path)
    return path, batch


def test_maps_and_word_shares_for_each_caption(scene, tmp_path: Path, capsys) -> None:
    path, batch = scene
    names = [SHAPE_CLASSES[c] for c in batch.labels[0].tolist()]
    out, saved = tmp_path / "it.png", tmp_path / "maps.pt"
    texts = [f"a {names[0]}", f"a {names[1]}"]
    argv = ["explain", str(path), "--text", texts[0], "--text", texts[1], "--model",
            "shapes-clip", "--out", str(out), "--save-maps", str(saved)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{texts[0]!r}: cosine" in printed and "words: a " in printed
    assert out.stat().st_size > 0
    record = torch.load(saved, weights_only=False)
    assert record["texts"] == texts and record["tokens"] == [t.split() for t in texts]
    assert record["maps"].shape == (2, 1, 8, 8)
    # Each caption's map peaks on the object it names (a coarse check; the card measures it).
    for k in range(2):
        assert pointing_game(record["maps"][k : k + 1], batch.masks[:, k]).all(), names[k]
    # The maps and scores are the library's.
    clip = load_shapes_clip()
    image = batch.images[:1]
    expected = FeatureActivationMap(clip.image_tower, clip.image_layer).attribute(
        image, reference_embeddings=clip.embed_texts(texts[1])
    )
    torch.testing.assert_close(record["maps"][1:], expected, atol=2e-3, rtol=0)  # PNG rounding
    torch.testing.assert_close(
        record["scores"], clip.similarity(image, texts)[0], atol=2e-3, rtol=0
    )


def test_contrast_subtracts_the_other_captions(scene, tmp_path: Path) -> None:
    path, _ = scene
    saved = tmp_path / "maps.pt"
    texts = ["a triangle", "a ring", "a star"]
    argv = ["explain", str(path), "--model", "shapes-clip", "--contrast", "--out",
            str(tmp_path / "c.png"), "--save-maps", str(saved)]  # fmt: skip
    for text in texts:
        argv += ["--text", text]
    assert main(argv) == 0
    record = torch.load(saved, weights_only=False)
    assert record["contrast"] is True
    clip = load_shapes_clip()
    from captum_fam.images import Preprocess, read_image

    image = Preprocess(64, resize="squash", mean=None, std=None)(read_image(path))[None]
    embeddings = clip.embed_texts(texts)
    fam = FeatureActivationMap(clip.image_tower, clip.image_layer)
    expected = fam.attribute(
        image, reference_embeddings=embeddings[0], background_embeddings=embeddings[1:]
    )
    torch.testing.assert_close(record["maps"][:1], expected)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "shapes"], "--text needs an image-text model"),
        (["--model", "shapes-clip", "--gallery", "."], "drop --gallery"),
        (["--model", "shapes-clip", "--similarity", "dot"], "compare by cosine"),
        (["--model", "shapes-clip", "--contrast"], "two --text"),
        (["--model", "hf-clip:"], "unknown image-text model"),
    ],
)
def test_bad_input_is_one_line_and_status_2(scene, extra, message, tmp_path, capsys) -> None:
    path, _ = scene
    argv = ["explain", str(path), "--text", "a ring", "--out", str(tmp_path / "x.png"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_captions_need_text_and_text_needs_no_references(scene, tmp_path, capsys) -> None:
    path, _ = scene
    out = str(tmp_path / "x.png")
    assert main(["explain", str(path), str(path), "--model", "shapes-clip", "--out", out]) == 2
    assert "give --text" in capsys.readouterr().err
    argv = ["explain", str(path), str(path), "--text", "a ring", "--model", "shapes-clip",
            "--out", out]  # fmt: skip
    assert main(argv) == 2
    assert "drop REFERENCE images" in capsys.readouterr().err
    assert main(["explain", str(path), str(path), "--contrast", "--out", out]) == 2
    assert "--contrast goes with --text" in capsys.readouterr().err


def _tiny_hf_clip(folder: Path) -> None:
    """A random-weight CLIPModel and its processor, saved as ``from_pretrained`` reads them."""
    transformers = pytest.importorskip("transformers")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in ["a</w>", "ring</w>", *letters, *(c + "</w>" for c in letters)]:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2}  # fmt: skip
    config = transformers.CLIPConfig(
        text_config={**tower, "vocab_size": len(vocab), "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1, "max_position_embeddings": 32},
        vision_config={**tower, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.CLIPModel(config)
    images = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    model.save_pretrained(folder / "clip")
    transformers.CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(
        folder / "clip"
    )


def test_a_transformers_clip_folder(scene, tmp_path: Path, capsys) -> None:
    _tiny_hf_clip(tmp_path)
    path, _ = scene
    saved = tmp_path / "maps.pt"
    argv = ["explain", str(path), "--text", "a ring", "--text", "a", "--model",
            f"hf-clip:{tmp_path / 'clip'}", "--out", str(tmp_path / "h.png"), "--save-maps",
            str(saved)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "first-order pull-back" in printed
    record = torch.load(saved, weights_only=False)
    assert record["maps"].shape == (2, 1, 4, 4)  # 32 px crop, 8 px patches, class token dropped
    assert record["tokens"][1] == ["<|startoftext|>", "a", "<|endoftext|>"]
    assert len(record["token_maps"][0]) == len(record["tokens"][0])
