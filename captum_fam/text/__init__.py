"""Sentence embedders: FAM for Hugging Face encoders and sentence-transformers models.

"Which words make these two sentences similar?" For a mean-pooled sentence embedding the
cosine decomposes exactly over the tokens of each sentence, and over pairs of tokens, one from
each (docs/method.md): :func:`sentence_fam` wires a model to FAM, :func:`explain_sentences`
tokenizes two lists of texts and explains each pair from both sides, and
:class:`SentencePairExplanation` merges word pieces back into words for display
(:mod:`captum_fam.text_visualization` draws them).

Models come as a ``transformers`` encoder (``AutoModel.from_pretrained(name)``), a
``sentence_transformers.SentenceTransformer``, or a :class:`SentenceEncoder`. Inputs are
``(input_ids, attention_mask)``; the attention mask is the pooling mask (``pooling_mask=1``),
so padding enters neither the embedding nor the maps.

Needs the ``text`` extra (``pip install "captum-fam[text]"``).

The package holds :mod:`.encoders` (wiring a model to FAM, loading one), :mod:`.words`
(tokenization, word pieces merged into words) and :mod:`.sentences` (pairs explained from both
sides and over token pairs).
"""

from captum_fam.text.encoders import (
    POOLINGS,
    RANDOM_WEIGHTS_FLAG,
    SentenceEncoder,
    SentenceTransformerForward,
    default_text_layer,
    load_sentence_model,
    random_weights,
    sentence_fam,
)
from captum_fam.text.sentences import SentencePairExplanation, explain_sentences
from captum_fam.text.words import TokenizedTexts, tokenize_texts

__all__ = [
    "POOLINGS",
    "RANDOM_WEIGHTS_FLAG",
    "SentenceEncoder",
    "SentencePairExplanation",
    "SentenceTransformerForward",
    "TokenizedTexts",
    "default_text_layer",
    "explain_sentences",
    "load_sentence_model",
    "random_weights",
    "sentence_fam",
    "tokenize_texts",
]
