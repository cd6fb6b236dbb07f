"""``captum-fam explain-text``: which words make two sentences similar.

Loads a sentence embedder (:func:`captum_fam.text.load_sentence_model`: a factory or a local
sentence-transformers or transformers folder), explains the pair from both sides with
:func:`captum_fam.text.explain_sentences`, prints the score and each word's signed share of it,
and draws both sentences with their word-pair matrix
(:func:`captum_fam.text_visualization.plot_sentence_pair`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

from captum_fam.cli.common import CLIError, model_errors, warn
from captum_fam.cli.figures import checked_figure_path, save_figure

__all__ = ["add_parser", "run"]

_SIMILARITIES = ("cosine", "dot")  # the two with a word-pair decomposition


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain-text",
        help="which words make two sentences similar",
        description="Explain the similarity of two sentences under a sentence embedder: each "
        "word's signed share of the score, for both sentences, and what each pair of words "
        "contributes (exact for mean-pooled embedders).",
    )
    parser.add_argument("first", help="the first sentence")
    parser.add_argument("second", help="the second sentence")
    parser.add_argument(
        "--model",
        required=True,
        help="package.module:factory, where factory() returns a SentenceTransformer or a "
        "(transformers encoder, tokenizer) pair, or a local folder saved by "
        "sentence-transformers or transformers",
    )
    parser.add_argument(
        "--layer", help="dotted name of the layer to explain (default: the last transformer block)"
    )
    parser.add_argument(
        "--pooling",
        choices=("mean", "cls", "pooler"),
        default="mean",
        help="how a transformers encoder embeds a sentence (default: mean; a "
        "SentenceTransformer pools as it was built)",
    )
    parser.add_argument(
        "--similarity", choices=_SIMILARITIES, default="cosine", help="(default: cosine)"
    )
    parser.add_argument(
        "--pieces", action="store_true", help="show word pieces instead of whole words"
    )
    parser.add_argument(
        "--special-tokens", action="store_true", help="show special tokens such as [CLS]"
    )
    parser.add_argument("--out", default="text-pair.png", help="figure file (default: %(default)s)")
    parser.add_argument("--html", help="also write Captum's HTML text view to this file")
    return parser


def run(args: argparse.Namespace) -> int:
    from captum_fam.models import _get_layer
    from captum_fam.text import explain_sentences, load_sentence_model, random_weights, sentence_fam
    from captum_fam.text_visualization import plot_sentence_pair

    out = checked_figure_path(args.out)
    html = _checked_html_path(args.html)
    for name, text in (("first", args.first), ("second", args.second)):
        if not text.strip():
            raise CLIError(f"the {name} sentence is empty")
    model, tokenizer = load_sentence_model(args.model)
    layer = None if args.layer is None else _get_layer(model, args.layer, args.model)
    notice = ""
    if random_weights(model):
        notice = "random weights: the shares show the mechanics, not meaning"
        warn(f"model {args.model} has {notice}")
    with model_errors("check --model, --layer and --pooling"):
        fam = sentence_fam(model, layer, args.similarity, pooling=args.pooling)
        try:
            pair = explain_sentences(fam, tokenizer, [args.first], [args.second])
        except ValueError as error:
            if "affine function" not in str(error):
                raise
            warn(
                "no word-pair matrix: this model's embedding is not a mean over tokens "
                f"(pooling {args.pooling}, or its own head); the word values are its "
                "first-order pull-back, not shares that add up to the score"
            )
            pair = explain_sentences(fam, tokenizer, [args.first], [args.second], False)
    words = not args.pieces
    score = float(pair.scores[0])
    print(f"{pair.similarity} {score:.4f}")
    for side, text in (("a", args.first), ("b", args.second)):
        labels, values = pair.words(0, side, words, args.special_tokens)
        print(f"{side}: {text}")
        print("   " + "  ".join(f"{label} {value:+.3f}" for label, value in
                                zip(labels, values.tolist(), strict=True)))  # fmt: skip
    figure = plot_sentence_pair(pair, 0, words, args.special_tokens)
    if notice:
        figure.suptitle(f"{pair.similarity} {score:.3f}\n{notice}", fontsize=10)
    save_figure(figure, out)
    print(f"figure: {out}")
    if html is not None:
        _write_html(pair, words, args.special_tokens, html)
        print(f"html: {html}")
    return 0


def _checked_html_path(text: str | None) -> Path | None:
    if text is None:
        return None
    path = Path(text)
    if path.is_dir():
        raise CLIError(f"--html {text!r} is a directory; give a file name such as pair.html")
    return path.resolve()


def _write_html(pair: Any, words: bool, special_tokens: bool, path: Path) -> None:
    from captum_fam.text_visualization import visualize_text_pair

    try:
        # Captum also displays the table; outside a notebook that prints its repr.
        with contextlib.redirect_stdout(io.StringIO()):
            html = visualize_text_pair(pair, 0, words, special_tokens)
    except AssertionError as error:  # Captum asserts that IPython is installed
        raise CLIError(f"--html needs IPython ({error})") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html.data)
    except OSError as error:
        raise CLIError(f"cannot write {path}: {error.strerror or error}") from None
