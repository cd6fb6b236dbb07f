"""FAM on a tiny random-weight Hugging Face CLIP model, offline: shapes and padding, CLIP's own
scores, invariants of the cosine's coefficients, the pull-back checked against autograd by hand,
and argument errors.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import requires_cuda
from hypothesis import given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")

from captum_fam.clip_models import CLIPImageForward, CLIPTextForward, clip_fams  # noqa: E402

# The image FAM says once per engine that it dropped CLIP's class token; asserted below.
pytestmark = pytest.mark.filterwarnings("ignore:token layout. dropped 1 prefix token")

RAW = {"relu_attributions": False, "normalize_weights": False}
BOS, EOS, PAD = 98, 99, 0
LENGTHS = (4, 3, 6)  # tokens per caption, start and end-of-text tokens included


def tiny_clip(seed: int = 0) -> transformers.CLIPModel:
    torch.manual_seed(seed)
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = transformers.CLIPConfig(
        text_config={
            **tower,
            "num_attention_heads": 2,
            "vocab_size": 100,
            "max_position_embeddings": 16,
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "pad_token_id": PAD,
        },
        vision_config={**tower, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    return transformers.CLIPModel(config).eval()


def images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def captions(lengths: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``: start, words, end-of-text, then padding."""
    generator = torch.Generator().manual_seed(seed)
    total = max(lengths)
    ids = torch.full((len(lengths), total), PAD)
    for row, length in enumerate(lengths):
        ids[row, 0], ids[row, length - 1] = BOS, EOS
        ids[row, 1 : length - 1] = torch.randint(1, BOS, (length - 2,), generator=generator)
    mask = (torch.arange(total) < torch.tensor(lengths)[:, None]).long()
    return ids, mask


@pytest.fixture(scope="module")
def model():
    return tiny_clip()


@pytest.fixture(scope="module")
def fams(model):
    return clip_fams(model)


@pytest.fixture(scope="module")
def embeddings(model):
    """Image and caption embeddings of the module's batch, from the model itself."""
    with torch.no_grad():
        image = model.get_image_features(pixel_values=images(3)).pooler_output
        ids, mask = captions(LENGTHS)
        text = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    return image, text


def test_maps_have_the_patch_grid_and_the_caption_length(model, embeddings):
    image_fam, text_fam = clip_fams(model)
    assert image_fam.layer is model.vision_model.encoder.layers[-1]
    assert text_fam.layer is model.text_model.encoder.layers[-1]
    image_embeddings, text_embeddings = embeddings
    with pytest.warns(UserWarning, match="dropped 1 prefix token"):
        image_maps = image_fam.attribute(images(3), reference_embeddings=text_embeddings)
    assert image_maps.shape == (3, 1, 4, 4)  # 32 px / patch 8, the class token dropped
    ids, mask = captions(LENGTHS)
    text_maps = text_fam.attribute(
        (ids, mask), reference_embeddings=image_embeddings, pooling_mask=1, **RAW
    )
    assert text_maps.shape == (3, 1, max(LENGTHS))
    assert bool((text_maps[:, 0][mask == 0] == 0).all())
    assert bool((text_maps[:, 0][mask == 1] != 0).all())


@pytest.mark.parametrize("index", [0, -1])
def test_every_encoder_layer_gives_maps(model, embeddings, index):
    image_embeddings, text_embeddings = embeddings
    image_fam, text_fam = clip_fams(
        model,
        vision_layer=model.vision_model.encoder.layers[index],
        text_layer=model.text_model.encoder.layers[index],
    )
    image_maps = image_fam.attribute(images(3), reference_embeddings=text_embeddings, **RAW)
    text_maps = text_fam.attribute(
        captions(LENGTHS), reference_embeddings=image_embeddings, pooling_mask=1, **RAW
    )
    for maps in (image_maps, text_maps):
        assert bool(torch.isfinite(maps).all())
        assert bool((maps.flatten(1).abs().amax(dim=1) > 1e-3).all())


@torch.no_grad()
def test_forwards_and_scores_are_clips_own(model, fams):
    pixels, (ids, mask) = images(3), captions(LENGTHS)
    image_embeddings = CLIPImageForward(model)(pixels)
    text_embeddings = CLIPTextForward(model)(ids, mask)
    assert image_embeddings.shape == text_embeddings.shape == (3, 16)
    torch.testing.assert_close(
        image_embeddings, model.get_image_features(pixel_values=pixels).pooler_output
    )
    torch.testing.assert_close(
        text_embeddings,
        model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
    )
    output = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    cosines = output.logits_per_image.diagonal() / model.logit_scale.exp()
    image_fam, text_fam = fams
    torch.testing.assert_close(image_fam.embed(pixels), image_embeddings)
    torch.testing.assert_close(text_fam.embed((ids, mask)), text_embeddings)
    torch.testing.assert_close(
        image_fam.similarity_scores(pixels, reference_embeddings=text_embeddings), cosines
    )
    torch.testing.assert_close(
        text_fam.similarity_scores((ids, mask), reference_embeddings=image_embeddings), cosines
    )


@settings(max_examples=8, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**16))
def test_maps_ignore_the_scale_of_the_reference(fams, embeddings, scale, seed):
    """Cosine coefficients use the unit reference: a positive scale changes nothing."""
    image_fam, text_fam = fams
    image_embeddings, text_embeddings = embeddings
    pixels = images(3, seed)
    for kwargs in (RAW, {}):
        torch.testing.assert_close(
            image_fam.attribute(pixels, reference_embeddings=scale * text_embeddings, **kwargs),
            image_fam.attribute(pixels, reference_embeddings=text_embeddings, **kwargs),
        )
    text = captions(LENGTHS, seed)
    torch.testing.assert_close(
        text_fam.attribute(text, reference_embeddings=scale * image_embeddings, pooling_mask=1),
        text_fam.attribute(text, reference_embeddings=image_embeddings, pooling_mask=1),
    )


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_maps_are_linear_in_the_unit_reference(fams, embeddings, seed):
    """Raw maps are linear in the cosine's coefficients r / (|r| |e_q|): the foil's map is
    subtracted, a foil equal to the reference cancels to exactly zero, and the opposite
    reference gives the opposite map."""
    image_fam, _ = fams
    _, text_embeddings = embeddings
    pixels = images(3, seed)
    reference, foil = text_embeddings, text_embeddings.roll(1, dims=0)

    def raw(**kwargs):
        return image_fam.attribute(pixels, **RAW, **kwargs)

    assert bool((raw(reference_embeddings=reference, foil_embeddings=reference) == 0).all())
    torch.testing.assert_close(
        raw(reference_embeddings=reference, foil_embeddings=foil),
        raw(reference_embeddings=reference) - raw(reference_embeddings=foil),
        atol=1e-6,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        raw(reference_embeddings=-reference), -raw(reference_embeddings=reference)
    )


def test_the_end_of_text_token_scores_zero_at_the_last_layer(model, embeddings):
    """The LayerNorm before the projection ignores the scale of the pooled state, so the
    pulled-back weights are orthogonal to it: the end-of-text token's own map value vanishes
    at the last layer (up to the LayerNorm's eps), and not at an earlier one."""
    image_embeddings, _ = embeddings
    text = captions(LENGTHS)
    end = torch.tensor(LENGTHS) - 1
    rows = torch.arange(len(LENGTHS))
    for index, vanishes in ((-1, True), (0, False)):
        _, text_fam = clip_fams(model, text_layer=model.text_model.encoder.layers[index])
        maps = text_fam.attribute(
            text, reference_embeddings=image_embeddings, pooling_mask=1, **RAW
        )[:, 0]
        ratio = maps[rows, end].abs() / maps.abs().amax(dim=1)
        assert bool((ratio < 1e-3).all()) == vanishes, (index, ratio)


def test_a_batch_maps_like_its_rows(fams, embeddings):
    image_fam, text_fam = fams
    image_embeddings, text_embeddings = embeddings
    pixels = images(3, seed=5)
    together = image_fam.attribute(pixels, reference_embeddings=text_embeddings)
    for row in range(3):
        alone = image_fam.attribute(
            pixels[row : row + 1], reference_embeddings=text_embeddings[row : row + 1]
        )
        torch.testing.assert_close(together[row : row + 1], alone, atol=1e-5, rtol=1e-4)
    # A caption alone, unpadded, maps as in the padded batch: padding is masked out of
    # attention and out of the map, and the end-of-text token stays the pooled one.
    ids, mask = captions(LENGTHS, seed=5)
    together = text_fam.attribute(
        (ids, mask), reference_embeddings=image_embeddings, pooling_mask=1
    )
    for row, length in enumerate(LENGTHS):
        alone = text_fam.attribute(
            (ids[row : row + 1, :length], mask[row : row + 1, :length]),
            reference_embeddings=image_embeddings[row : row + 1],
            pooling_mask=1,
        )
        torch.testing.assert_close(together[row : row + 1, :, :length], alone, atol=1e-5, rtol=1e-4)
        assert bool((together[row, :, length:] == 0).all())


def test_a_call_leaves_the_model_as_it_was():
    model = tiny_clip(seed=1)
    model.text_model.train()  # a mixed state, kept as it is
    model.vision_model.embeddings.requires_grad_(False)
    training = {name: module.training for name, module in model.named_modules()}
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    image_fam, text_fam = clip_fams(model)
    text = captions(LENGTHS)
    image_fam.attribute(images(3), reference_embeddings=text_fam.embed(text))
    text_fam.attribute(text, reference_embeddings=image_fam.embed(images(3)), pooling_mask=1)
    assert {name: module.training for name, module in model.named_modules()} == training
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize("weighting", ["reference", "contribution"])
def test_image_weights_are_the_pulled_back_gradient(model, embeddings, weighting):
    """What is compared: FAM's raw map (no ReLU, no normalisation) against, by hand with
    autograd on the same model, g = the gradient of e . r / (|r| |e|) with the query norm |e|
    held fixed (the cosine's decomposition coefficients, FAM's output-space coefficients) with
    respect to the last vision layer's output tokens, summed over all 17 tokens (the class
    token included); the map at each patch is <A_patch, w> with w = g ("reference") or
    w = mean over patches of A times g ("contribution")."""
    _, text_embeddings = embeddings
    pixels = images(3, seed=7)
    layer = model.vision_model.encoder.layers[-1]
    captured = {}
    handle = layer.register_forward_hook(lambda module, args, output: captured.update(a=output))
    try:
        with torch.enable_grad():
            e = model.get_image_features(pixel_values=pixels).pooler_output
    finally:
        handle.remove()
    tokens = captured["a"]  # (3, 1 + 16, 32)
    unit_reference = text_embeddings / text_embeddings.norm(dim=1, keepdim=True)
    coefficients = unit_reference / e.norm(dim=1, keepdim=True).detach()
    (gradient,) = torch.autograd.grad((e * coefficients).sum(), tokens)
    # The head reads the class token alone: every patch token's gradient is zero.
    assert bool((gradient[:, 1:] == 0).all())
    g = gradient.sum(dim=1)
    patches = tokens[:, 1:].detach()
    weights = g if weighting == "reference" else patches.mean(dim=1) * g
    expected = torch.einsum("npc,nc->np", patches, weights).reshape(3, 1, 4, 4)

    image_fam, _ = clip_fams(model, weighting=weighting)
    maps = image_fam.attribute(pixels, reference_embeddings=text_embeddings, **RAW)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-5)


def test_arguments_are_checked(model):
    for wrong in (torch.nn.Linear(2, 2), "openai/clip-vit-base-patch32"):
        with pytest.raises(TypeError, match="model"):
            clip_fams(wrong)
    with pytest.raises(TypeError, match="model"):
        CLIPImageForward(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model"):
        CLIPTextForward(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="vision_layer must be a module of model.vision_model"):
        clip_fams(model, vision_layer=model.text_model.encoder.layers[-1])
    with pytest.raises(TypeError, match="text_layer"):
        clip_fams(model, text_layer="encoder.layers.1")
    with pytest.raises(ValueError, match="weighting"):
        clip_fams(model, weighting="gradient")


class _Towers(torch.nn.Module):
    """A CLIP-like model without CLIP's towers; ``features`` is what its methods return."""

    def __init__(self, features):
        super().__init__()
        self.features = features

    def get_image_features(self, pixel_values):
        return self.features

    def get_text_features(self, input_ids, attention_mask=None):
        return self.features


def test_features_as_a_tensor_or_an_output_with_pooler_output():
    embeddings = torch.randn(2, 4)
    pixels, ids = images(2), captions((3, 3))[0]
    # transformers 4 returns the tensor, transformers 5 an output object holding it.
    for features in (
        embeddings,
        transformers.modeling_outputs.BaseModelOutputWithPooling(pooler_output=embeddings),
    ):
        assert CLIPImageForward(_Towers(features))(pixels) is embeddings
        assert CLIPTextForward(_Towers(features))(ids) is embeddings
    with pytest.raises(ValueError, match="pooler_output"):
        CLIPImageForward(_Towers({"image_embeds": embeddings}))(pixels)
    with pytest.raises(ValueError, match="pass vision_layer"):
        clip_fams(_Towers(embeddings))


@requires_cuda
def test_cuda_maps_match_cpu(model, embeddings):
    image, text = embeddings
    ids, mask = captions(LENGTHS)
    cpu_image_fam, cpu_text_fam = clip_fams(model)
    expected_image = cpu_image_fam.attribute(images(3), reference_embeddings=text)
    expected_text = cpu_text_fam.attribute((ids, mask), reference_embeddings=image, pooling_mask=1)
    image_fam, text_fam = clip_fams(copy.deepcopy(model).cuda())
    maps = image_fam.attribute(images(3).cuda(), reference_embeddings=text.cuda())
    tokens = text_fam.attribute(
        (ids.cuda(), mask.cuda()), reference_embeddings=image.cuda(), pooling_mask=1
    )
    assert maps.device.type == tokens.device.type == "cuda"
    torch.testing.assert_close(maps.cpu(), expected_image, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(tokens.cpu(), expected_text, atol=1e-4, rtol=1e-3)
