"""Offline text encoders: real architectures, random weights, a tokenizer that never says [UNK]."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from captum_fam.zoo.text_encoders import (  # noqa: E402
    ARCHITECTURES,
    random_text_encoder,
    word_piece_tokenizer,
)


def test_the_tokenizer_splits_unknown_words_into_pieces():
    tokenizer = word_piece_tokenizer()
    assert tokenizer.tokenize("A dog is swimming!") == [
        "a", "dog", "is", "s", "##w", "##i", "##m", "##m", "##ing", "!",
    ]  # fmt: skip
    ids = tokenizer("Zebra #42, quite (odd)?")["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[0] == "[CLS]" and tokenizer.pad_token_id == 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_architecture_encodes_padded_batches(architecture):
    model, tokenizer = random_text_encoder(architecture, hidden_size=16, layers=1, heads=2)
    assert type(model).__name__.lower().startswith(architecture) and not model.training
    batch = tokenizer(["a dog", "two people walking in the park"], padding=True,
                      return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        states = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert states.last_hidden_state.shape == (2, batch["input_ids"].shape[1], 16)


def test_weights_follow_the_seed_and_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    first, _ = random_text_encoder(seed=1, hidden_size=16)
    assert torch.equal(torch.rand(1), expected)
    second, _ = random_text_encoder(seed=1, hidden_size=16)
    third, _ = random_text_encoder(seed=2, hidden_size=16)
    weight = "embeddings.word_embeddings.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], third.state_dict()[weight])
    with pytest.raises(ValueError, match="architecture must be one of"):
        random_text_encoder("gpt2")


def test_a_sentence_transformer_is_assembled_and_saved(tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from captum_fam.zoo.text_encoders import random_sentence_transformer

    model = random_sentence_transformer(tmp_path, hidden_size=16, layers=1, heads=2,
                                        normalize=True)  # fmt: skip
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    loaded = sentence_transformers.SentenceTransformer(str(tmp_path / "model"), device="cpu")
    texts = ["a dog runs", "the red car"]
    torch.testing.assert_close(loaded.encode(texts, convert_to_tensor=True),
                               model.encode(texts, convert_to_tensor=True))  # fmt: skip
