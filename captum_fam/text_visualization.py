"""Drawing a sentence pair: Captum's text visualization and a heat-strip figure.

:func:`visualize_text_pair` renders both sentences' word shares as Captum's HTML table
(``captum.attr.visualization.visualize_text``); :func:`plot_sentence_pair` draws them with
matplotlib: sentence ``a`` as a column of cells down the left, sentence ``b`` as a row across
the top, and the pair matrix between them, with colour bars. Values are signed (diverging
colours centred on zero): shares that pull the score up are red, those that pull it down blue.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from captum.attr import visualization as viz
from matplotlib import colors
from matplotlib.figure import Figure

from captum_fam.text import SentencePairExplanation

__all__ = ["DIVERGING_CMAP", "plot_sentence_pair", "text_records", "visualize_text_pair"]

DIVERGING_CMAP = "RdBu_r"
"""Signed values: red pulls the score up, blue pulls it down, white is zero."""

_ANNOTATE_UP_TO = 14  # cells per side that still have room for their value


def text_records(
    explanation: SentencePairExplanation,
    index: int = 0,
    words: bool = True,
    special_tokens: bool = False,
) -> list[Any]:
    r"""Captum ``VisualizationDataRecord``\ s of pair ``index``: sentence ``a``, then ``b``.

    Each record's ``word_attributions`` are the word shares divided by the largest absolute
    share of the two sentences (Captum colours values in [-1, 1]), so that colours compare
    across the two; ``pred_prob`` is the score and ``attr_score`` the sum of the shown shares.

    Args:
        explanation (SentencePairExplanation): From
                    :func:`captum_fam.text.explain_sentences`.
        index (int, optional): The pair. Default: 0
        words (bool, optional): Sum word pieces per word. Default: True
        special_tokens (bool, optional): Show special tokens. Default: False
    """
    sides = [explanation.words(index, side, words, special_tokens) for side in ("a", "b")]
    scale = max(float(values.abs().max()) for _, values in sides) or 1.0
    score = float(explanation.scores[index])
    return [
        viz.VisualizationDataRecord(
            values / scale,
            score,
            explanation.similarity,
            f"sentence {side}",
            f"against {other}",
            float(values.sum()),
            labels,
            None,
        )
        for (labels, values), side, other in zip(sides, "ab", "ba", strict=True)
    ]


def visualize_text_pair(
    explanation: SentencePairExplanation,
    index: int = 0,
    words: bool = True,
    special_tokens: bool = False,
    legend: bool = True,
) -> Any:
    r"""Both sentences of pair ``index`` as Captum's HTML word-importance table.

    Calls ``captum.attr.visualization.visualize_text`` (which also displays the table in a
    notebook) on :func:`text_records`. Needs IPython.

    Returns:
        ``IPython.display.HTML``; its ``.data`` is the HTML text, to save to a file.

    Examples::

        >>> html = visualize_text_pair(explain_sentences(fam, tokenizer, a, b))
        >>> Path("pair.html").write_text(html.data)
    """
    return viz.visualize_text(text_records(explanation, index, words, special_tokens), legend)


def plot_sentence_pair(
    explanation: SentencePairExplanation,
    index: int = 0,
    words: bool = True,
    special_tokens: bool = False,
    title: str | None = None,
    cmap: str = DIVERGING_CMAP,
    figure: Figure | None = None,
) -> Figure:
    r"""Sentence ``a`` down the left, ``b`` across the top, and their pair matrix between.

    The strips show each word's share of the score (summing to the score), the matrix what each
    word of ``a`` and word of ``b`` contribute together (its rows sum to ``a``'s strip, its
    columns to ``b``'s). Strips and matrix have a colour bar each, both centred on zero.
    Without a pair matrix (``token_pairs=False``) only the two strips are drawn.

    Args:
        explanation (SentencePairExplanation): From
                    :func:`captum_fam.text.explain_sentences`.
        index (int, optional): The pair. Default: 0
        words (bool, optional): Sum word pieces per word. Default: True
        special_tokens (bool, optional): Show special tokens. Default: False
        title (str, optional): Default: the score.
        cmap (str, optional): A diverging matplotlib colour map. Default: ``"RdBu_r"``
        figure (Figure, optional): Draw into this figure. Default: a new
                    ``matplotlib.figure.Figure`` (no pyplot state).

    Returns:
        The figure: save it with ``figure.savefig(path)``.

    Examples::

        >>> figure = plot_sentence_pair(explain_sentences(fam, tokenizer, a, b))
        >>> figure.savefig("pair.png", dpi=150)
    """
    labels_a, values_a = explanation.words(index, "a", words, special_tokens)
    labels_b, values_b = explanation.words(index, "b", words, special_tokens)
    has_pairs = explanation.token_pairs is not None
    matrix = explanation.pairs(index, words, special_tokens)[2].numpy() if has_pairs else None
    rows, columns = len(labels_a), len(labels_b)
    if figure is None:
        figure = Figure(
            figsize=(2.4 + 0.55 * columns + 1.0, 2.4 + 0.36 * max(rows, 3)), layout="constrained"
        )
    grid = figure.add_gridspec(
        2, 3, width_ratios=[1.6, max(columns, 1) * 0.55, 0.2],
        height_ratios=[1.2, max(rows, 1) * 0.36],
    )  # fmt: skip
    strip_norm = _centred(np.concatenate([values_a.numpy(), values_b.numpy()]))
    strip_a = figure.add_subplot(grid[1, 0])
    strip_b = figure.add_subplot(grid[0, 1])
    image = strip_a.imshow(values_a.numpy()[:, None], cmap=cmap, norm=strip_norm, aspect="auto")
    strip_b.imshow(values_b.numpy()[None, :], cmap=cmap, norm=strip_norm, aspect="auto")
    strip_a.set_yticks(range(rows), labels_a)
    strip_a.set_xticks([0], ["a"])
    strip_b.set_xticks(range(columns), labels_b, rotation=60, ha="left", rotation_mode="anchor")
    strip_b.xaxis.tick_top()
    strip_b.set_yticks([0], ["b"])
    annotate = max(rows, columns) <= _ANNOTATE_UP_TO
    if annotate:
        _annotate(strip_a, values_a.numpy()[:, None], strip_norm)
        _annotate(strip_b, values_b.numpy()[None, :], strip_norm)
    # The corner above a and left of b holds the strips' colour bar.
    corner = figure.add_subplot(grid[0, 0])
    corner.axis("off")
    bar = figure.colorbar(
        image, cax=corner.inset_axes((0.05, 0.45, 0.9, 0.16)), orientation="horizontal"
    )
    bar.set_label("word share of the score", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    if matrix is not None:
        pairs = figure.add_subplot(grid[1, 1], sharey=strip_a, sharex=strip_b)
        pair_norm = _centred(matrix)
        pair_image = pairs.imshow(matrix, cmap=cmap, norm=pair_norm, aspect="auto")
        pairs.tick_params(labelleft=False, labelbottom=False, left=False, bottom=False)
        if annotate:
            _annotate(pairs, matrix, pair_norm)
        pair_bar = figure.colorbar(pair_image, cax=figure.add_subplot(grid[1, 2]))
        pair_bar.set_label("word-pair share of the score")
    score = float(explanation.scores[index])
    figure.suptitle(title if title is not None else f"{explanation.similarity} {score:.3f}")
    return figure


def _centred(values: np.ndarray) -> colors.Normalize:
    """A colour scale symmetric around zero, so that white means no contribution."""
    limit = float(np.abs(values).max()) if values.size else 1.0
    limit = limit or 1.0
    return colors.Normalize(vmin=-limit, vmax=limit)


def _annotate(axis: Any, values: np.ndarray, norm: colors.Normalize) -> None:
    digits = 2 if float(norm.vmax or 0.0) >= 0.1 else 3
    for (row, column), value in np.ndenumerate(values):
        dark = abs(norm(value) - 0.5) > 0.3
        axis.text(column, row, f"{value:.{digits}f}", ha="center", va="center", fontsize=7,
                  color="white" if dark else "black")  # fmt: skip
