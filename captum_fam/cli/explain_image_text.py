"""``captum-fam explain IMAGE --text TEXT [--text TEXT ...]``: why an image-text model matches
an image with each caption.

Runs :func:`captum_fam.image_text.explain_image_text` on an image-text model: for each caption,
the image's map (what in the image matches the caption) and the caption's signed token shares
(which words the image supports), in one figure, with the cosine of each pair, also printed.
``--contrast`` explains each caption against the others (the mean score of the other captions
is subtracted), which separates what each caption names from what they all share.

Models (``--model``): ``shapes-clip`` (the CLIP of the shapes world shipped with captum-fam)
or ``hf-clip:NAME`` (a ``transformers`` CLIPModel and its CLIPProcessor, by hub name,
downloaded by ``transformers`` on first use, or a local folder saved with
``save_pretrained``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from captum_fam.attribution import FeatureActivationMap
from captum_fam.cli import options
from captum_fam.cli.common import CLIError, model_errors
from captum_fam.cli.figures import checked_figure_path, image_text_figure, save_figure
from captum_fam.image_text import explain_image_text
from captum_fam.images import Preprocess, read_image
from captum_fam.models import ModelLoadError

__all__ = ["IMAGE_TEXT_MODELS", "ImageTextModel", "is_image_text", "load_image_text_model", "run"]

IMAGE_TEXT_MODELS = ("shapes-clip", "hf-clip:NAME")
"""The ``--model`` values of image-text models."""

Tokenize = Callable[[Sequence[str]], tuple[Tensor, Tensor, list[list[str]]]]


@dataclass
class ImageTextModel:
    """An image-text model ready for FAM: a FAM per tower, the tokenizer and the image
    preprocessing. ``tokenize(texts)`` gives ``(input_ids, attention_mask, tokens)``, where
    ``tokens[i]`` names the unmasked positions of text ``i``."""

    image_fam: FeatureActivationMap
    text_fam: FeatureActivationMap
    tokenize: Tokenize
    preprocess: Preprocess
    label: str
    layers: tuple[str, str]
    notes: list[str] = field(default_factory=list)


def is_image_text(spec: str) -> bool:
    """Whether ``--model`` names an image-text model."""
    return spec == "shapes-clip" or spec.startswith("hf-clip:")


def load_image_text_model(spec: str, weighting: str = "reference") -> ImageTextModel:
    """The image-text model that ``--model`` names (:data:`IMAGE_TEXT_MODELS`).

    Raises:
        ModelLoadError: For an unknown specification, missing weights or a folder that does
                    not hold a CLIP model and its processor.
    """
    if spec == "shapes-clip":
        return _shapes_clip(weighting)
    if spec.startswith("hf-clip:") and spec.partition(":")[2]:
        return _hf_clip(spec.partition(":")[2], weighting)
    raise ModelLoadError(f"unknown image-text model {spec!r}: expected one of {IMAGE_TEXT_MODELS}")


def _shapes_clip(weighting: str) -> ImageTextModel:
    from captum_fam.zoo import load_shapes_clip

    try:
        clip = load_shapes_clip()
    except (FileNotFoundError, RuntimeError) as error:
        raise ModelLoadError(" ".join(str(error).split())) from None

    def tokenize(texts: Sequence[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        try:
            input_ids, attention_mask = clip.tokenizer.encode(list(texts))
        except ValueError as error:
            raise CLIError(f"--text: {error}") from None
        limit = getattr(clip.text_tower.encoder, "max_length", None)
        if limit is not None and input_ids.shape[1] > limit:
            raise CLIError(f"--text: the shapes CLIP reads at most {limit} words")
        return input_ids, attention_mask, [clip.tokenizer.tokenize(t) for t in texts]

    return ImageTextModel(
        FeatureActivationMap(clip.image_tower, clip.image_layer, weighting=weighting),
        FeatureActivationMap(
            clip.text_tower, clip.text_layer, weighting=weighting, token_layout="sequence"
        ),
        tokenize,
        # The image tower standardises [0, 1] RGB inside; trained on square 64 px scenes.
        Preprocess(64, resize="squash", mean=None, std=None),
        "shapes-clip",
        ("trunk.block4", "encoder"),
        [
            "shapes-clip is a toy model of synthetic shapes: it was trained on 9 shape words and "
            "8 colour words, and its maps mean nothing on photographs"
        ],
    )


def _hf_clip(name: str, weighting: str) -> ImageTextModel:
    try:
        from transformers import CLIPModel, CLIPProcessor
    except ImportError:
        raise ModelLoadError(
            'hf-clip models need transformers: pip install "captum-fam[text]"'
        ) from None
    from captum_fam.clip_models import clip_fams

    try:
        model = CLIPModel.from_pretrained(name).eval()
        processor = CLIPProcessor.from_pretrained(name)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"hf-clip:{name}: {' '.join(str(error).split())}") from None
    image_fam, text_fam = clip_fams(model, weighting=weighting)
    images = processor.image_processor
    crop = _side(images.crop_size, "height") or _side(images.size, "height") or 224
    size = _side(images.size, "shortest_edge") or crop
    preprocess = Preprocess(
        crop, resize="crop", resize_size=size, mean=tuple(images.image_mean),
        std=tuple(images.image_std), interpolation="bicubic",
    )  # fmt: skip
    tokenizer = processor.tokenizer
    limit = model.config.text_config.max_position_embeddings

    def tokenize(texts: Sequence[str]) -> tuple[Tensor, Tensor, list[list[str]]]:
        batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        if input_ids.shape[1] > limit:
            raise CLIError(f"--text: hf-clip:{name} reads at most {limit} tokens")
        tokens = [
            [tokenizer.convert_ids_to_tokens(int(i)).replace("</w>", "") for i in row[m.bool()]]
            for row, m in zip(input_ids, attention_mask, strict=True)
        ]
        return input_ids, attention_mask, tokens

    return ImageTextModel(
        image_fam,
        text_fam,
        tokenize,
        preprocess,
        f"hf-clip:{name}",
        ("vision_model.encoder.layers[-1]", "text_model.encoder.layers[-1]"),
        [
            "CLIP pools the class token and the end-of-text token through a LayerNorm: its "
            "maps are a first-order pull-back of the cosine (docs/method.md)"
        ],
    )


def _side(size: object, key: str) -> int | None:
    """A side of an image processor's ``size``/``crop_size`` (a dict or a ``SizeDict``)."""
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


def check_args(args: argparse.Namespace) -> None:
    """Options that do not go with ``--text``, and the model it needs."""
    given = [
        name
        for name, present in (
            ("REFERENCE images", bool(args.references)),
            ("--gallery", args.gallery is not None),
            ("--index", args.index is not None),
            ("--background", args.background is not None),
            ("--top-k", args.top_k is not None),
            ("--weights", args.weights is not None),
            ("--layer", args.layer is not None),
            ("--token-layout", args.token_layout is not None),
        )
        if present
    ]
    if given:
        raise CLIError(f"--text explains the image against captions; drop {', '.join(given)}")
    if not is_image_text(args.model):
        raise CLIError(
            f"--text needs an image-text model: --model shapes-clip or hf-clip:NAME; got "
            f"{args.model!r}"
        )
    if args.similarity != "cosine":
        raise CLIError("image-text models compare by cosine: drop --similarity")
    if any(not t.strip() for t in args.text):
        raise CLIError("--text must not be empty")
    if args.contrast and len(args.text) < 2:
        raise CLIError("--contrast explains each caption against the others: give two --text")


def run(args: argparse.Namespace) -> int:
    map_format = options.map_format(args.save_maps)
    out = checked_figure_path(args.out)
    check_args(args)
    image = read_image(args.query)
    loaded = load_image_text_model(args.model, args.weighting)
    texts = list(args.text)
    input_ids, attention_mask, tokens = loaded.tokenize(texts)
    query = options.prepare(loaded.preprocess, image, args.query).unsqueeze(0)
    n = len(texts)
    with model_errors():
        text_embeddings = loaded.text_fam.embed((input_ids, attention_mask), pooling_mask=1)
        result = explain_image_text(
            loaded.image_fam,
            loaded.text_fam,
            query.expand(n, *query.shape[1:]),
            (input_ids, attention_mask),
            relu_attributions=False,
        )
        maps = result.image_maps.clamp_min(0)
        if args.contrast:
            maps = torch.cat(
                [
                    loaded.image_fam.attribute(
                        query,
                        reference_embeddings=text_embeddings[i],
                        background_embeddings=text_embeddings[torch.arange(n) != i],
                    )
                    for i in range(n)
                ]
            )
    token_values = [result.token_maps[i, 0][attention_mask[i].bool()].tolist() for i in range(n)]
    scores = result.scores.tolist()
    mode = "each caption against the others (--contrast)" if args.contrast else "each caption"
    header = [
        f"FAM · {loaded.label} · layers {loaded.layers[0]} (image), {loaded.layers[1]} (text) "
        f"· cosine, {args.weighting} weights",
        f"image maps: {mode}; words: signed share of the score (red supports the match)",
    ]
    figure = image_text_figure(
        loaded.preprocess.display(query[0]),
        maps,
        texts,
        tokens,
        token_values,
        scores,
        Path(args.query).name,
        header,
        loaded.notes,
    )
    save_figure(figure, out)
    if args.save_maps is not None:
        options.save_maps(
            Path(args.save_maps),
            map_format,
            {
                "image": Path(args.query).name,
                "texts": texts,
                "scores": result.scores,
                "maps": maps,
                "token_maps": [torch.tensor(v) for v in token_values],
                "tokens": tokens,
                "model": loaded.label,
                "contrast": bool(args.contrast),
                "weighting": args.weighting,
            },
            ragged=("token_maps", "tokens"),
        )
    print(f"image {args.query}: model {loaded.label}, {args.weighting} weights")
    print(f"preprocessing: {loaded.preprocess.description}")
    for note in loaded.notes:
        print(f"note: {note}")
    for text, score, words, values in zip(texts, scores, tokens, token_values, strict=True):
        total = float(np.abs(values).sum()) or 1.0
        shares = ", ".join(
            f"{w} {100 * v / total:+.0f}%" for w, v in zip(words, values, strict=True)
        )
        print(f"  {text!r}: cosine {score:.4f}; words: {shares}")
    print(f"figure: {out}")
    if args.save_maps is not None:
        print(f"maps: {Path(args.save_maps).resolve()}")
    return 0
