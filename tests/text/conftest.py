"""The small random-weight encoders of every architecture the text tests run on."""

from __future__ import annotations

import pytest

from captum_fam.zoo.text_encoders import ARCHITECTURES, random_text_encoder


@pytest.fixture(scope="module", params=ARCHITECTURES)
def encoder(request):
    """``(model, tokenizer)``: BERT, DistilBERT, MPNet or RoBERTa, 2 layers of width 32."""
    pytest.importorskip("transformers")
    return random_text_encoder(request.param, hidden_size=32, layers=2, heads=4)
