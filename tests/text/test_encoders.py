"""Sentence encoders, offline with random weights: FAM's maps are the mean-pooling
decomposition of the model's own cosine, padding changes nothing, class-token pooling is the
pull-back, sentence-transformers models explain through their own forward, models load.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from text_cases import FIRST, RAW, SECOND, last_states, mean_pooled  # noqa: E402

from captum_fam import FeatureActivationMap  # noqa: E402
from captum_fam.text import (  # noqa: E402
    SentenceEncoder,
    SentenceTransformerForward,
    default_text_layer,
    explain_sentences,
    sentence_fam,
    tokenize_texts,
)
from captum_fam.zoo.text_encoders import random_text_encoder  # noqa: E402


@torch.no_grad()
def test_maps_are_the_mean_pooling_decomposition(encoder):
    model, tokenizer = encoder
    fam = sentence_fam(model)
    assert fam.layer is default_text_layer(model)
    a, b = tokenize_texts(tokenizer, FIRST), tokenize_texts(tokenizer, SECOND)
    maps = fam.attribute(a.inputs, reference=b.inputs, pooling_mask=1, **RAW)
    assert maps.shape == (3, 1, a.input_ids.shape[1])
    states_a, states_b = last_states(model, a.inputs), last_states(model, b.inputs)
    e_a, e_b = mean_pooled(states_a, a.attention_mask), mean_pooled(states_b, b.attention_mask)
    scores = torch.cosine_similarity(e_a, e_b)
    torch.testing.assert_close(fam.similarity_scores(a.inputs, reference=b.inputs), scores)
    # map_t = <A_t, e_b> / (|e_a| |e_b|) on tokens, exactly 0 on padding.
    weights = e_b / (e_a.norm(dim=1, keepdim=True) * e_b.norm(dim=1, keepdim=True))
    expected = torch.einsum("ntc,nc->nt", states_a, weights) * a.attention_mask
    torch.testing.assert_close(maps[:, 0], expected, atol=1e-5, rtol=1e-4)
    assert bool((maps[:, 0][a.attention_mask == 0] == 0).all())
    valid_mean = maps[:, 0].sum(1) / a.attention_mask.sum(1)
    torch.testing.assert_close(valid_mean, scores, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_padding_to_a_longer_batch_leaves_a_sentence_map_unchanged(encoder):
    model, tokenizer = encoder
    fam = sentence_fam(model)
    reference = fam.embed(tokenize_texts(tokenizer, SECOND[:1]).inputs)
    alone = tokenize_texts(tokenizer, FIRST[2])
    batch = tokenize_texts(tokenizer, [FIRST[2], SECOND[1]])
    assert batch.input_ids.shape[1] > alone.input_ids.shape[1]
    map_alone = fam.attribute(alone.inputs, reference_embeddings=reference, pooling_mask=1, **RAW)
    map_batch = fam.attribute(batch.inputs, reference_embeddings=reference, pooling_mask=1, **RAW)
    length = alone.input_ids.shape[1]
    torch.testing.assert_close(map_batch[:1, :, :length], map_alone, atol=1e-5, rtol=1e-4)
    assert bool((map_batch[0, 0, length:] == 0).all())


@torch.no_grad()
def test_cls_pooling_explains_the_pull_back_and_has_no_pairs():
    model, tokenizer = random_text_encoder("bert", hidden_size=32)
    fam = sentence_fam(model, pooling="cls")
    a, b = tokenize_texts(tokenizer, FIRST), tokenize_texts(tokenizer, SECOND)
    maps = fam.attribute(a.inputs, reference=b.inputs, pooling_mask=1, **RAW)
    cls_a, cls_b = last_states(model, a.inputs)[:, 0], last_states(model, b.inputs)[:, 0]
    # The head picks token 0: its gradient, summed over tokens, is g_out, applied to every token.
    weights = cls_b / (cls_a.norm(dim=1, keepdim=True) * cls_b.norm(dim=1, keepdim=True))
    expected = torch.einsum("ntc,nc->nt", last_states(model, a.inputs), weights)
    torch.testing.assert_close(maps[:, 0], expected * a.attention_mask, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(maps[:, 0, 0], torch.cosine_similarity(cls_a, cls_b),
                               atol=1e-5, rtol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="affine function of the layer's"):
        explain_sentences(fam, tokenizer, FIRST, SECOND)


def test_sentence_encoder_poolings():
    model, tokenizer = random_text_encoder("bert", hidden_size=32)
    batch = tokenize_texts(tokenizer, FIRST)
    with torch.no_grad():
        output = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        pooler = SentenceEncoder(model, "pooler")(*batch.inputs)
    torch.testing.assert_close(pooler, output.pooler_output)
    distil, _ = random_text_encoder("distilbert", hidden_size=32)
    with pytest.raises(ValueError, match="has no pooler output"):
        SentenceEncoder(distil, "pooler")(*batch.inputs)
    with pytest.raises(ValueError, match="pooling must be one of"):
        SentenceEncoder(model, "max")


def test_bad_arguments_are_named():
    model, tokenizer = random_text_encoder("bert", hidden_size=32)
    fam = sentence_fam(model)
    with pytest.raises(TypeError, match="model must be a transformers encoder"):
        sentence_fam("bert-base-uncased")
    with pytest.raises(ValueError, match="found no list of transformer blocks.*pass layer="):
        sentence_fam(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="texts must be a str or a non-empty sequence"):
        tokenize_texts(tokenizer, [])
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        tokenize_texts(lambda texts: texts, ["a"])
    with pytest.raises(ValueError, match="a and b must hold as many texts; got 2 and 1"):
        explain_sentences(fam, tokenizer, FIRST[:2], SECOND[:1])
    with pytest.raises(ValueError, match="'euclidean' is not"):
        explain_sentences(sentence_fam(model, similarity="euclidean"), tokenizer, FIRST, SECOND)
    a = tokenize_texts(tokenizer, FIRST)
    with pytest.raises(TypeError, match=r"reference\[0\] holds floating point values .*"
                                         "embeddings go in reference_embeddings"):  # fmt: skip
        fam.attribute(a.inputs, reference=(torch.rand(1, 5), torch.ones(1, 5)), pooling_mask=1)
    with pytest.raises(ValueError, match=r"reference\[0\] has 1 dimension"):
        fam.attribute(a.inputs, reference=(a.input_ids[0], a.attention_mask[0]), pooling_mask=1)
    with pytest.raises(ValueError, match=r"pooling_mask has shape \(3, 4\)"):
        fam.attribute(a.inputs, reference=a.inputs, pooling_mask=a.attention_mask[:, :4])
    model_error = torch.full_like(a.input_ids, 10_000)  # beyond the vocabulary: torch's error
    with pytest.raises(IndexError):
        fam.attribute((model_error, a.attention_mask), reference=a.inputs, pooling_mask=1)


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    from captum_fam.zoo.text_encoders import random_sentence_transformer

    return random_sentence_transformer(tmp_path_factory.mktemp("st"), hidden_size=32)


class TestSentenceTransformers:
    @torch.no_grad()
    def test_its_own_forward_gives_the_mean_pooling_decomposition(self, sentence_model):
        layer = sentence_model[0].auto_model.encoder.layer[-1]
        forward = SentenceTransformerForward(sentence_model)
        fam = FeatureActivationMap(forward, layer, token_layout="sequence",
                                   embedding_key="sentence_embedding")  # fmt: skip
        a, b = tokenize_texts(sentence_model, FIRST), tokenize_texts(sentence_model, SECOND)
        maps = fam.attribute(a.inputs, reference=b.inputs, pooling_mask=1, **RAW)
        encoded_a = sentence_model.encode(FIRST, convert_to_tensor=True)
        encoded_b = sentence_model.encode(SECOND, convert_to_tensor=True)
        scores = sentence_model.similarity_pairwise(encoded_a, encoded_b)
        torch.testing.assert_close(fam.similarity_scores(a.inputs, reference=b.inputs), scores,
                                   atol=1e-5, rtol=1e-4)  # fmt: skip
        states = last_states(sentence_model[0].auto_model, a.inputs)
        weights = encoded_b / (encoded_a.norm(dim=1, keepdim=True) *
                               encoded_b.norm(dim=1, keepdim=True))  # fmt: skip
        expected = torch.einsum("ntc,nc->nt", states, weights) * a.attention_mask
        torch.testing.assert_close(maps[:, 0], expected, atol=1e-5, rtol=1e-4)

    @torch.no_grad()
    def test_sentence_fam_explains_it_and_skips_a_final_normalize(self, sentence_model, tmp_path):
        from captum_fam.zoo.text_encoders import random_sentence_transformer

        normalized = random_sentence_transformer(tmp_path, hidden_size=32, normalize=True)
        for model in (sentence_model, normalized):
            fam = sentence_fam(model, similarity="dot" if model is normalized else "cosine")
            assert fam.similarity.name == "cosine"
            pair = explain_sentences(fam, model, FIRST, SECOND)
            expected = model.similarity_pairwise(
                model.encode(FIRST, convert_to_tensor=True),
                model.encode(SECOND, convert_to_tensor=True),
            )
            torch.testing.assert_close(pair.scores, expected, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(pair.maps_a.sum(1), pair.scores, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(pair.token_pairs.sum((1, 2)), pair.scores,
                                       atol=1e-5, rtol=1e-4)  # fmt: skip
        assert sentence_fam(normalized).forward_func.stop_before_normalize
        kept = sentence_fam(normalized, similarity="euclidean")
        assert not kept.forward_func.stop_before_normalize


def test_models_load_from_a_factory_or_a_folder(tmp_path):
    from captum_fam.models import ModelLoadError
    from captum_fam.text import load_sentence_model, random_weights

    model, tokenizer = load_sentence_model("captum_fam.zoo.text_encoders:random_text_encoder")
    assert random_weights(model) and not random_weights(torch.nn.Linear(2, 2))
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    loaded, loaded_tokenizer = load_sentence_model(tmp_path / "saved")
    assert random_weights(loaded)  # the flag travels with the saved config
    texts = tokenize_texts(loaded_tokenizer, FIRST)
    with torch.no_grad():
        torch.testing.assert_close(SentenceEncoder(loaded)(*texts.inputs),
                                   SentenceEncoder(model)(*texts.inputs))  # fmt: skip
    with pytest.raises(ModelLoadError, match="holds neither"):
        load_sentence_model(tmp_path)
