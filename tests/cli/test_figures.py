"""The command line's figures: every word inside the canvas, one colour map, a labelled bar."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from matplotlib.text import Text

from captum_fam.cli.common import CLIError
from captum_fam.cli.figures import checked_figure_path, demo_figure, pair_figure
from captum_fam.visualization import CMAP, MAP_LABEL


def texts_inside(figure) -> list[str]:
    """The figure's visible texts, after checking that each lies inside the canvas."""
    renderer = figure.canvas.get_renderer()
    figure.draw_without_rendering()
    canvas = figure.bbox
    found = []
    for text in figure.findobj(Text):
        if not text.get_visible() or not text.get_text().strip():
            continue
        box = text.get_window_extent(renderer)
        assert canvas.x0 - 1 <= box.x0 and box.x1 <= canvas.x1 + 1, text.get_text()
        assert canvas.y0 - 1 <= box.y0 and box.y1 <= canvas.y1 + 1, text.get_text()
        found.append(text.get_text())
    return found


@pytest.mark.parametrize("count", [1, 3])
def test_pair_figure_fits_its_header(count: int) -> None:
    generator = torch.Generator().manual_seed(0)
    figure = pair_figure(
        torch.rand(3, 32, 48, generator=generator),
        [torch.rand(3, 32, 32, generator=generator) for _ in range(count)],
        torch.rand(count, 1, 4, 6, generator=generator),
        [torch.rand(1, 4, 4, generator=generator) for _ in range(count)],
        "a_query_with_a_rather_long_file_name.jpg",
        [f"reference_number_{i}_with_a_long_name.png" for i in range(count)],
        [0.5] * count,
        "cosine",
        ranked=True,
        header=[
            "FAM · torchvision:convnext_tiny (ConvNeXt_Tiny_Weights.IMAGENET1K_V1) · layer "
            "features · cosine similarity, reference weights",
            "preprocessing: shorter side to 236 px, centre crop 224x224 px; ImageNet mean/std",
        ],
        notices=["RANDOM WEIGHTS: torchvision:convnext_tiny is untrained, so ..."],
    )
    words = " ".join(texts_inside(figure))
    assert "IMAGENET1K_V1" in words and "centre crop" in words and "RANDOM WEIGHTS" in words
    assert MAP_LABEL in words
    bar = figure.axes[-1]
    assert bar.get_ylabel() == MAP_LABEL
    assert bar._colorbar.cmap.name == CMAP


def test_demo_figure_fits_and_outlines_the_objects() -> None:
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 20:30, 20:30] = True
    figure = demo_figure(
        torch.rand(1, 3, 32, 32)[0],
        torch.rand(2, 3, 32, 32),
        torch.rand(2, 1, 4, 4),
        torch.randn(2, 1, 32, 32),
        masks,
        ["circle", "hourglass"],
        [0.7, 0.8],
        [[0.3, 0.1], [0.05, 0.4]],
        [[0.2, 0.2], [0.1, 0.3]],
        "cosine",
        header=["FAM and Integrated Gradients (IG) of the same score"],
    )
    words = " ".join(texts_inside(figure))
    assert "mass on circle 30%, hourglass 10%" in words
    assert "99th percentile" in words
    assert sum(len(axis.collections) for axis in figure.axes) >= 8  # two outlines per map panel


def test_checked_figure_path(tmp_path: Path) -> None:
    assert checked_figure_path(str(tmp_path / "f.svg")) == (tmp_path / "f.svg").resolve()
    with pytest.raises(CLIError, match="use one of the extensions"):
        checked_figure_path("f.doc")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(CLIError, match="is a directory"):
        checked_figure_path(str(tmp_path / "dir.png"))
