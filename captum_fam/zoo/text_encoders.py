"""Hugging Face text encoders with random weights and a word-piece tokenizer, built offline.

For trying the text API, for tests and for benchmarks where no pretrained model can be
downloaded: the architectures are the real ones (``transformers``' BERT, DistilBERT, MPNet and
RoBERTa), only the weights are random, so the maps show FAM's mechanics (shapes, masks, the
decomposition), not meaning. With network access, load a trained model instead::

    from transformers import AutoModel, AutoTokenizer
    model = AutoModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")

Needs the ``text`` extra (``pip install "captum-fam[text]"``).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ARCHITECTURES",
    "BASIC_WORDS",
    "random_sentence_transformer",
    "random_text_encoder",
    "word_piece_tokenizer",
]

ARCHITECTURES = ("bert", "distilbert", "mpnet", "roberta")
"""The encoder families :func:`random_text_encoder` builds."""

_WORD_LIST = """
    a an the this that these those some any every no all each one two three
    i you he she it we they me him her us them my your his its our their
    is are was were be been being am do does did have has had will would can could should may
    and or but not so if then than as of in on at to from by with for about into over under
    after before between through up down out off near next behind above below
    man woman men women child children person people boy girl dog dogs cat cats bird horse
    car cars bus train bike road street city house home room kitchen table chair bed door
    window park garden tree trees grass field beach sea water river lake sky sun rain snow
    food pizza bread apple fruit coffee tea cup plate guitar music song piano ball game team
    player book phone computer picture photo hat shirt dress shoes
    play plays playing played ride rides riding run runs running walk walks walking sit sits
    sitting stand stands standing eat eats eating cook cooking drink read reading write sing
    singing jump jumping look looks looking hold holding wear wearing watch watching
    big small large little young old new good bad happy sad red blue green white black yellow
    brown fast slow hot cold
"""
BASIC_WORDS = tuple(_WORD_LIST.split())
"""A small English vocabulary for :func:`word_piece_tokenizer`; other words split into pieces."""

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SUFFIXES = ("s", "es", "ed", "ing", "er", "est", "ly", "y", "n", "t")


def word_piece_tokenizer(words: Sequence[str] = BASIC_WORDS, lowercase: bool = True) -> Any:
    r"""A BERT-style word-piece tokenizer over ``words``, as a ``transformers`` fast tokenizer.

    The vocabulary is ``[PAD]`` (id 0), ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``, the words,
    common suffix pieces (``##ing``, ``##s``, ...), single letters and digits with their
    ``##`` forms, and ASCII punctuation: any ASCII text tokenizes without ``[UNK]``, and words
    outside the vocabulary split into several pieces (the case that word merging handles).
    Each text is wrapped as ``[CLS] ... [SEP]``.

    Args:
        words (Sequence[str], optional): Whole-word entries. Default: :data:`BASIC_WORDS`
        lowercase (bool, optional): Lower-case the text first. Default: True

    Returns:
        ``transformers.PreTrainedTokenizerFast``

    Examples::

        >>> tokenizer = word_piece_tokenizer()
        >>> tokenizer.tokenize("A dog is swimming")
        ['a', 'dog', 'is', 's', '##w', '##i', '##m', '##m', '##ing']
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = (
        string.ascii_lowercase + string.digits + ("" if lowercase else string.ascii_uppercase)
    )
    entries = [
        *_SPECIAL,
        *words,
        *(f"##{suffix}" for suffix in _SUFFIXES),
        *alphabet,
        *(f"##{character}" for character in alphabet),
        *string.punctuation,
    ]
    vocabulary = {token: index for index, token in enumerate(dict.fromkeys(entries))}
    tokenizer = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )


def random_text_encoder(
    architecture: str = "bert",
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int | None = None,
    max_length: int = 128,
    seed: int = 0,
    tokenizer: Any = None,
) -> tuple[Any, Any]:
    r"""A ``transformers`` encoder with random weights, and its tokenizer, built offline.

    Args:
        architecture (str, optional): ``"bert"``, ``"distilbert"``, ``"mpnet"`` or
                    ``"roberta"``. Default: ``"bert"``
        hidden_size (int, optional): Width of the token states. Default: 64 (BERT-base: 768)
        layers (int, optional): Transformer blocks. Default: 2 (BERT-base: 12)
        heads (int, optional): Attention heads. Default: 4 (BERT-base: 12)
        intermediate_size (int, optional): Feed-forward width. Default: ``4 * hidden_size``
        max_length (int, optional): Longest input in tokens. Default: 128
        seed (int, optional): Seed of the random weights. Default: 0
        tokenizer (optional): A ``transformers`` tokenizer. Default:
                    :func:`word_piece_tokenizer`

    Returns:
        ``(model, tokenizer)``: the model in eval mode, on the CPU.

    Examples::

        >>> model, tokenizer = random_text_encoder("distilbert")
        >>> batch = tokenizer(["a dog runs"], return_tensors="pt")
        >>> model(**batch).last_hidden_state.shape
        torch.Size([1, 5, 64])
    """
    import transformers

    from captum_fam.text import RANDOM_WEIGHTS_FLAG

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {list(ARCHITECTURES)}; got {architecture!r}")
    tokenizer = word_piece_tokenizer() if tokenizer is None else tokenizer
    intermediate_size = 4 * hidden_size if intermediate_size is None else intermediate_size
    common = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    model_class: Any
    if architecture == "distilbert":
        config = transformers.DistilBertConfig(
            dim=hidden_size, n_layers=layers, n_heads=heads, hidden_dim=intermediate_size,
            max_position_embeddings=max_length, **common,
        )  # fmt: skip
        model_class = transformers.DistilBertModel
    else:
        config_class, model_class = {
            "bert": (transformers.BertConfig, transformers.BertModel),
            "mpnet": (transformers.MPNetConfig, transformers.MPNetModel),
            "roberta": (transformers.RobertaConfig, transformers.RobertaModel),
        }[architecture]
        # RoBERTa and MPNet number positions after the padding id: leave room for it.
        config = config_class(
            hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate_size, max_position_embeddings=max_length + 2,
            **common,
        )  # fmt: skip
    # Saved with the model, so that tools loading it again can say its weights are random.
    setattr(config, RANDOM_WEIGHTS_FLAG, True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval(), tokenizer


def random_sentence_transformer(
    directory: str | Path,
    architecture: str = "bert",
    normalize: bool = False,
    **encoder: Any,
) -> Any:
    r"""A ``sentence-transformers`` model with random weights, assembled offline.

    The encoder of :func:`random_text_encoder` and its tokenizer are saved to
    ``directory/transformer``, loaded back as a ``Transformer`` module, followed by mean
    ``Pooling`` (and ``Normalize`` when ``normalize``); the assembled model is saved to
    ``directory/model`` too, so that ``SentenceTransformer(directory / "model")`` (or the
    command line's ``--model``) loads it again.

    Args:
        directory (str or Path): An empty or new folder.
        architecture (str, optional): As in :func:`random_text_encoder`. Default: ``"bert"``
        normalize (bool, optional): End with a ``Normalize`` module. Default: False
        **encoder: Passed to :func:`random_text_encoder` (``hidden_size``, ``layers``,
                    ``seed``, ...).

    Returns:
        ``sentence_transformers.SentenceTransformer`` in eval mode, on the CPU.

    Examples::

        >>> model = random_sentence_transformer(tmp_path)
        >>> model.encode(["a dog runs"], convert_to_tensor=True).shape
        torch.Size([1, 64])
    """
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer import modules
    except ImportError:
        from sentence_transformers import models as modules  # type: ignore[no-redef,attr-defined]

    directory = Path(directory)
    model, tokenizer = random_text_encoder(architecture, **encoder)
    saved = directory / "transformer"
    model.save_pretrained(saved)
    tokenizer.save_pretrained(saved)
    transformer = modules.Transformer(str(saved))
    width = model.config.hidden_size if architecture != "distilbert" else model.config.dim
    chain = [transformer, modules.Pooling(width, "mean")]
    if normalize:
        chain.append(modules.Normalize())
    sentence_model = SentenceTransformer(modules=chain, device="cpu")
    sentence_model.save(str(directory / "model"))
    return sentence_model.eval()
