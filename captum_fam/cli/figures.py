"""The command line's figures: maps over the images, with what was run and how it is scaled.

Every map panel uses :data:`captum_fam.visualization.CMAP`, is scaled to its own maximum (or,
for pixel-level Integrated Gradients, to its 99th percentile) and shares one colour bar that
says so. The header states the model, layer, similarity and preprocessing, and, in red, any
notice that makes the result meaningless or doubtful (random weights, a toy model).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from captum_fam.cli.common import CLIError
from captum_fam.visualization import (
    MAP_LABEL,
    attribution_to_numpy,
    draw_map,
    image_to_numpy,
    scale_map,
)

__all__ = [
    "IG_PERCENTILE",
    "checked_figure_path",
    "demo_figure",
    "image_text_figure",
    "pair_figure",
    "save_figure",
    "summary_figure",
]

IG_PERCENTILE = 99.0
"""Integrated Gradients panels are scaled to this percentile of their positive values: a few
pixels carry most of a pixel-level attribution, and scaled to its maximum the panel is blank."""

_PANEL_IN = 2.7  # inches per image panel
_TITLE_PT = 9
_TITLE_CHARS = 34  # of a panel title at _TITLE_PT on a _PANEL_IN wide panel
_NOTICE_COLOUR = "#b00020"
_HEADER_PT = 10


def pair_figure(
    query: Tensor,
    references: Sequence[Tensor],
    maps: Tensor,
    reference_maps: Sequence[Tensor],
    query_name: str,
    names: Sequence[str],
    scores: Sequence[float],
    similarity: str,
    ranked: bool,
    header: Sequence[str],
    notices: Sequence[str] = (),
    pairs_per_row: int = 2,
) -> Figure:
    """Per reference, side by side: the query with its map against the reference, and the
    reference with its map against the query."""
    count = len(names)
    per_row = min(pairs_per_row, count)
    rows = -(-count // per_row)
    width = max(2 * per_row * _PANEL_IN + 0.9, 6.4)
    figure, body, axes = _grid(rows, 2 * per_row, width, rows * (_PANEL_IN + 0.55), header, notices)
    picture = image_to_numpy(query)
    mappable = None
    for index, name in enumerate(names):
        row, column = divmod(index, per_row)
        left, right = axes[row, 2 * column], axes[row, 2 * column + 1]
        label = f"{index + 1}. {_short(name)}" if ranked else _short(name)
        score = f"{similarity} {float(scores[index]):.3f}"
        title = textwrap.fill(f"{_short(query_name)} vs {label}", _TITLE_CHARS) + f"\n{score}"
        mappable = _map_panel(left, maps[index], picture, title)
        reference = image_to_numpy(references[index])
        _map_panel(right, reference_maps[index], reference, f"{label}\nvs the query")
    _colour_bar(body, axes, mappable)
    return figure


def demo_figure(
    query: Tensor,
    references: Tensor,
    fam_maps: Tensor,
    ig_maps: Tensor,
    masks: Tensor,
    names: Sequence[str],
    scores: Sequence[float],
    fam_mass: Sequence[Sequence[float]],
    ig_mass: Sequence[Sequence[float]],
    similarity: str,
    header: Sequence[str],
) -> Figure:
    """Per reference (one per object of the query): the query, the reference, FAM's map and
    Integrated Gradients' map, each titled with its share of mass on each object."""
    width = 4 * _PANEL_IN + 0.9
    area = ", ".join(
        f"{n} {100 * float(m.float().mean()):.0f}%" for n, m in zip(names, masks, strict=True)
    )
    caption = [
        *header,
        "Mass: share of a map's positive sum inside each object (outlined in cyan; the objects "
        f"cover {area} of the image). IG panels are scaled to their {IG_PERCENTILE:.0f}th "
        "percentile.",
    ]
    figure, body, axes = _grid(len(names), 4, width, len(names) * (_PANEL_IN + 0.75), caption, ())
    picture = image_to_numpy(query)
    outlines = [mask.numpy().astype(float) for mask in masks]
    mappable = None
    for row, name in enumerate(names):
        score = f"{similarity} {float(scores[row]):.3f}"
        _image_panel(axes[row, 0], picture, f"query: {' + '.join(names)}")
        _image_panel(axes[row, 1], image_to_numpy(references[row]), f"reference: {name}")
        for column, (method, maps, mass, percentile) in enumerate(
            (("FAM", fam_maps, fam_mass, 100.0), ("IG", ig_maps, ig_mass, IG_PERCENTILE)), 2
        ):
            shares = ", ".join(f"{n} {100 * v:.0f}%" for n, v in zip(names, mass[row], strict=True))
            axis = axes[row, column]
            mappable = _map_panel(
                axis,
                maps[row],
                picture,
                f"{method} vs {name} · {score}\nmass on {shares}",
                percentile,
            )
            for outline in outlines:
                axis.contour(outline, levels=[0.5], colors="#00e5ff", linewidths=0.8)
    _colour_bar(
        body,
        axes,
        mappable,
        f"map, share of the panel's maximum (IG: of its {IG_PERCENTILE:.0f}th percentile)",
    )
    return figure


def image_text_figure(
    image: Tensor,
    maps: Tensor,
    texts: Sequence[str],
    tokens: Sequence[Sequence[str]],
    token_values: Sequence[Sequence[float]],
    scores: Sequence[float],
    image_name: str,
    header: Sequence[str],
    notices: Sequence[str] = (),
) -> Figure:
    """Per caption, side by side: the image with its map for the caption, and the caption's
    words as bars of their signed share of the score (red: for the match, blue: against)."""
    longest = max(len(t) for t in tokens)
    bars_in = max(_PANEL_IN, 0.3 * longest + 0.8)
    width = _PANEL_IN + bars_in + 1.2
    figure, body, axes = _grid(
        len(texts), 2, width, len(texts) * (_PANEL_IN + 0.55), header, notices
    )
    picture = image_to_numpy(image)
    mappable = None
    for row, (text, words, values) in enumerate(zip(texts, tokens, token_values, strict=True)):
        title = textwrap.fill(f"{_short(image_name)} vs {text!r}", _TITLE_CHARS)
        mappable = _map_panel(
            axes[row, 0], maps[row], picture, f"{title}\ncosine {scores[row]:.3f}"
        )
        values_array = np.asarray(values, dtype=float)
        shares = values_array / (np.abs(values_array).sum() or 1.0)
        axis = axes[row, 1]
        axis.set_axis_on()
        axis.bar(
            range(len(words)),
            shares,
            color=["#c0392b" if v >= 0 else "#2c6fbb" for v in shares],
        )
        axis.axhline(0.0, color="black", linewidth=0.6)
        axis.set_xticks(range(len(words)), words, rotation=45, ha="right", fontsize=_TITLE_PT)
        axis.set_ylabel("share of the score", fontsize=_TITLE_PT - 1)
        axis.tick_params(axis="y", labelsize=8)
        axis.set_title("words the image supports", fontsize=_TITLE_PT)
    _colour_bar(body, axes[:, :1], mappable)
    return figure


def summary_figure(
    rows: Sequence[tuple[str, Sequence[tuple[np.ndarray, Tensor, str]]]],
    header: Sequence[str],
    notices: Sequence[str] = (),
) -> Figure:
    """Rows of items (a row's title, then per item: the picture, its map and a title), one
    map over each picture: the best and the worst items of a dataset job."""
    columns = max(len(items) for _, items in rows)
    width = max(columns * _PANEL_IN * 0.8 + 0.9, 6.4)
    height = len(rows) * (_PANEL_IN * 0.8 + 0.75)
    figure, body, axes = _grid(len(rows), columns, width, height, header, notices)
    mappable = None
    for row, (name, items) in enumerate(rows):
        for column, (picture, attribution, title) in enumerate(items):
            mappable = _map_panel(axes[row, column], attribution, picture, title)
        axes[row, 0].set_ylabel(name, fontsize=_HEADER_PT, fontweight="bold")
    _colour_bar(body, axes, mappable)
    return figure


def checked_figure_path(out: str) -> Path:
    """The resolved figure path, refused before any work if matplotlib cannot write it."""
    path = Path(out)
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    extension = path.suffix.lower().lstrip(".")
    if extension not in supported:
        raise CLIError(
            f"cannot write a figure to {out!r}: use one of the extensions "
            + ", ".join(f".{e}" for e in sorted(supported))
        )
    if path.exists() and path.is_dir():
        raise CLIError(f"--out {out!r} is a directory; give a file name such as fam.png")
    return path.resolve()


def save_figure(figure: Figure, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise CLIError(f"cannot write {path}: {error.strerror or error}") from None


def _grid(
    rows: int,
    columns: int,
    width: float,
    height: float,
    header: Sequence[str],
    notices: Sequence[str],
) -> tuple[Figure, Any, Any]:
    """A figure with a text header (black lines, then red notices) above a grid of panels."""
    # Average glyph widths of DejaVu Sans, in ems: wrap lines to the figure's width.
    regular, bold = int(width * 72 / (0.56 * _HEADER_PT)), int(width * 72 / (0.64 * _HEADER_PT))
    lines = [(text, "black") for line in header for text in textwrap.wrap(line, regular)]
    lines += [(text, _NOTICE_COLOUR) for line in notices for text in textwrap.wrap(line, bold)]
    line_in = 1.5 * _HEADER_PT / 72
    top = len(lines) * line_in + 0.25
    figure = Figure(figsize=(width, height + top), layout="constrained")
    FigureCanvasAgg(figure)
    parts: Any = figure.subfigures(2, 1, height_ratios=[top, height])
    title, body = parts
    for index, (text, colour) in enumerate(lines):
        title.text(
            0.5,
            1 - (0.12 + (index + 0.5) * line_in) / top,
            text,
            ha="center",
            va="center",
            fontsize=_HEADER_PT,
            color=colour,
            fontweight="bold" if colour == _NOTICE_COLOUR else "normal",
        )
    axes = body.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    return figure, body, axes


def _map_panel(
    axis: Any, attribution: Tensor, picture: np.ndarray, title: str, percentile: float = 100.0
) -> Any:
    axis.set_axis_on()
    heat = scale_map(attribution_to_numpy(attribution, picture.shape[:2]), percentile)
    mappable = draw_map(axis, heat, picture)
    axis.set_title(title, fontsize=_TITLE_PT)
    return mappable


def _image_panel(axis: Any, picture: np.ndarray, title: str) -> None:
    axis.set_axis_on()
    axis.imshow(picture)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=_TITLE_PT)


def _colour_bar(body: Any, axes: Any, mappable: Any, label: str = MAP_LABEL) -> None:
    if mappable is not None:
        bar = body.colorbar(mappable, ax=axes, shrink=0.8, aspect=30, pad=0.02)
        bar.set_label(label, fontsize=_TITLE_PT - 1)
        bar.ax.tick_params(labelsize=8)


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]
