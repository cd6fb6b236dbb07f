"""Tests of captum_fam.image_text: both towers of an image-text model explained together."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import requires_cuda

from captum_fam import FeatureActivationMap
from captum_fam.image_text import explain_image_text, explain_text_to_image
from captum_fam.tasks import explain_retrieval
from captum_fam.zoo.clip import ImageTower, TextTower

N, T, VOCAB = 4, 5, 12


@pytest.fixture(scope="module")
def towers():
    torch.manual_seed(0)
    image_tower = ImageTower(dim=16, width=4, channels=16).eval()
    text_tower = TextTower(VOCAB, dim=16, width=16).eval()
    return image_tower, text_tower


@pytest.fixture(scope="module")
def fams(towers):
    image_tower, text_tower = towers
    image_fam = FeatureActivationMap(image_tower, image_tower.trunk.block4)
    text_fam = FeatureActivationMap(text_tower, text_tower.encoder, token_layout="sequence")
    return image_fam, text_fam


def _texts(n: int = N, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(2, VOCAB, (n, T), generator=g)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return input_ids * attention_mask, attention_mask


def _images(n: int = N, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_both_sides_equal_their_attribute_calls(fams):
    image_fam, text_fam = fams
    images, texts = _images(), _texts()
    result = explain_image_text(image_fam, text_fam, images, texts)
    text_embeddings = text_fam.embed(texts, pooling_mask=1)
    image_embeddings = image_fam.embed(images)
    torch.testing.assert_close(
        result.image_maps, image_fam.attribute(images, reference_embeddings=text_embeddings)
    )
    torch.testing.assert_close(
        result.token_maps,
        text_fam.attribute(texts, reference_embeddings=image_embeddings, pooling_mask=1),
    )
    torch.testing.assert_close(
        result.scores, F.cosine_similarity(image_embeddings, text_embeddings)
    )
    assert result.image_maps.shape == (N, 1, 4, 4) and result.token_maps.shape == (N, 1, T)
    assert (result.token_maps[:, 0][texts[1] == 0] == 0).all()


def test_foils_make_each_side_contrastive(fams):
    image_fam, text_fam = fams
    images, texts = _images(), _texts()
    foil_texts, foil_images = _texts(1, seed=5), _images(N, seed=6)
    result = explain_image_text(
        image_fam, text_fam, images, texts, foil_texts=foil_texts, foil_images=foil_images,
        relu_attributions=False,
    )  # fmt: skip
    text_embeddings = text_fam.embed(texts, pooling_mask=1)
    foil_text_embeddings = text_fam.embed(foil_texts, pooling_mask=1)
    image_embeddings, foil_image_embeddings = image_fam.embed(images), image_fam.embed(foil_images)
    expected_images = image_fam.attribute(
        images, reference_embeddings=text_embeddings, foil_embeddings=foil_text_embeddings,
        relu_attributions=False,
    )  # fmt: skip
    expected_tokens = text_fam.attribute(
        texts, reference_embeddings=image_embeddings, foil_embeddings=foil_image_embeddings,
        pooling_mask=1, relu_attributions=False,
    )  # fmt: skip
    torch.testing.assert_close(result.image_maps, expected_images)
    torch.testing.assert_close(result.token_maps, expected_tokens)
    # The same foils given as embeddings.
    again = explain_image_text(
        image_fam, text_fam, images, texts, foil_text_embeddings=foil_text_embeddings,
        foil_image_embeddings=foil_image_embeddings, relu_attributions=False,
    )  # fmt: skip
    torch.testing.assert_close(again.image_maps, result.image_maps)
    torch.testing.assert_close(again.token_maps, result.token_maps)
    # A foil equal to the reference leaves nothing to explain.
    same = explain_image_text(image_fam, text_fam, images, texts, foil_texts=texts)
    assert (same.image_maps == 0).all()


def test_one_forward_per_tower(towers, fams):
    image_fam, text_fam = fams
    calls = {"image": 0, "text": 0}
    hooks = [
        towers[0].register_forward_hook(lambda *_: calls.__setitem__("image", calls["image"] + 1)),
        towers[1].register_forward_hook(lambda *_: calls.__setitem__("text", calls["text"] + 1)),
    ]
    try:
        explain_image_text(image_fam, text_fam, _images(), _texts())
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"image": 1, "text": 1}


def test_text_to_image_search_matches_scores_and_both_maps(fams):
    image_fam, text_fam = fams
    texts, gallery = _texts(2), _images(10, seed=3)
    hits = explain_text_to_image(text_fam, image_fam, texts, gallery=gallery, k=3, batch_size=4)
    gallery_embeddings = image_fam.embed(gallery)
    text_embeddings = text_fam.embed(texts, pooling_mask=1)
    cosines = F.normalize(text_embeddings, dim=1) @ F.normalize(gallery_embeddings, dim=1).T
    top, indices = cosines.topk(3, dim=1)
    assert torch.equal(hits.indices, indices)
    torch.testing.assert_close(hits.scores, top)
    assert hits.maps.shape == (2, 3, T) and hits.gallery_maps.shape == (2, 3, 4, 4)
    for i in range(2):
        for j in range(3):
            item = gallery[indices[i, j]][None]
            image_map = image_fam.attribute(item, reference_embeddings=text_embeddings[i])
            torch.testing.assert_close(hits.gallery_maps[i, j], image_map[0, 0])
            token_map = text_fam.attribute(
                tuple(t[i : i + 1] for t in texts),
                reference_embeddings=gallery_embeddings[indices[i, j]],
                pooling_mask=1,
            )
            torch.testing.assert_close(hits.maps[i, j], token_map[0, 0])
    cached = explain_text_to_image(
        text_fam, image_fam, texts, gallery_embeddings=gallery_embeddings, k=3
    )
    assert torch.equal(cached.indices, hits.indices) and cached.gallery_maps is None
    torch.testing.assert_close(cached.maps, hits.maps)


def test_explain_retrieval_is_unchanged_by_the_shared_core(fams):
    image_fam, _ = fams
    queries, gallery = _images(2), _images(8, seed=4)
    hits = explain_retrieval(image_fam, queries, gallery=gallery, k=2)
    embeddings = F.normalize(image_fam.embed(gallery), dim=1)
    expected = (F.normalize(image_fam.embed(queries), dim=1) @ embeddings.T).topk(2, dim=1)
    assert torch.equal(hits.indices, expected.indices)
    assert hits.gallery_maps.shape == (2, 2, 4, 4)


def test_bad_arguments_name_themselves(fams):
    image_fam, text_fam = fams
    images, texts = _images(), _texts()
    with pytest.raises(TypeError, match="image_fam"):
        explain_image_text(object(), text_fam, images, texts)
    with pytest.raises(TypeError, match="text_fam"):
        explain_text_to_image("text", image_fam, texts, gallery=images)
    with pytest.raises(ValueError, match="same number"):
        explain_image_text(image_fam, text_fam, images[:2], texts)
    with pytest.raises(TypeError, match="pooling_mask"):
        explain_image_text(image_fam, text_fam, images, texts, text_pooling_mask=True)
    with pytest.raises(ValueError, match="foil_text"):
        explain_image_text(
            image_fam, text_fam, images, texts, foil_texts=texts,
            foil_text_embeddings=torch.ones(1, 16),
        )  # fmt: skip
    with pytest.raises(ValueError, match="gallery"):
        explain_text_to_image(text_fam, image_fam, texts)
    with pytest.raises(ValueError, match="k must"):
        explain_text_to_image(text_fam, image_fam, texts, gallery=images, k=5)
    narrow = ImageTower(dim=8, width=4, channels=16).eval()
    other = FeatureActivationMap(narrow, narrow.trunk.block4)
    with pytest.raises(ValueError, match="one space"):
        explain_image_text(other, text_fam, images, texts)


@requires_cuda
def test_cuda_towers_give_the_cpu_maps(towers, fams):
    image_fam, text_fam = fams
    images, texts = _images(), _texts()
    expected = explain_image_text(image_fam, text_fam, images, texts)
    search = explain_text_to_image(text_fam, image_fam, texts, gallery=images, k=2)
    image_tower, text_tower = (copy.deepcopy(t).cuda() for t in towers)
    image_cuda = FeatureActivationMap(image_tower, image_tower.trunk.block4)
    text_cuda = FeatureActivationMap(text_tower, text_tower.encoder, token_layout="sequence")
    texts_cuda = tuple(t.cuda() for t in texts)
    result = explain_image_text(image_cuda, text_cuda, images.cuda(), texts_cuda)
    assert result.image_maps.device.type == result.token_maps.device.type == "cuda"
    torch.testing.assert_close(result.image_maps.cpu(), expected.image_maps, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(result.token_maps.cpu(), expected.token_maps, atol=1e-4, rtol=1e-3)
    hits = explain_text_to_image(text_cuda, image_cuda, texts_cuda, gallery=images.cuda(), k=2)
    assert torch.equal(hits.indices.cpu(), search.indices)
    torch.testing.assert_close(hits.gallery_maps.cpu(), search.gallery_maps, atol=1e-4, rtol=1e-3)
