"""Sentence-pair drawings: Captum's HTML records and the heat-strip figure show the numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from captum_fam.text import explain_sentences, sentence_fam  # noqa: E402
from captum_fam.text_visualization import (  # noqa: E402
    plot_sentence_pair,
    text_records,
    visualize_text_pair,
)
from captum_fam.zoo.text_encoders import random_text_encoder  # noqa: E402

FIRST, SECOND = ["A man is playing a guitar."], ["Someone plays an instrument!"]


@pytest.fixture(scope="module")
def explained():
    model, tokenizer = random_text_encoder("bert", hidden_size=32)
    fam = sentence_fam(model)
    return (
        explain_sentences(fam, tokenizer, FIRST, SECOND),
        explain_sentences(fam, tokenizer, FIRST, SECOND, token_pairs=False),
    )


def test_records_scale_both_sentences_alike(explained):
    pair, _ = explained
    record_a, record_b = text_records(pair)
    labels_a, values_a = pair.words(0, "a")
    labels_b, values_b = pair.words(0, "b")
    assert record_a.raw_input_ids == labels_a and record_b.raw_input_ids == labels_b
    scale = max(values_a.abs().max(), values_b.abs().max())
    torch.testing.assert_close(record_a.word_attributions, values_a / scale)
    assert max(record_a.word_attributions.abs().max(), record_b.word_attributions.abs().max()) == 1
    assert record_a.pred_prob == pytest.approx(float(pair.scores[0]))
    assert record_b.attr_score == pytest.approx(float(values_b.sum()))


def test_html_names_every_word(explained):
    pytest.importorskip("IPython")
    html = visualize_text_pair(explained[0], special_tokens=True).data
    for word in ["[CLS]", "guitar", "instrument", "against b", "cosine"]:
        assert word in html


def test_the_figure_draws_strips_and_the_pair_matrix(explained, tmp_path):
    pair, without_pairs = explained
    figure = plot_sentence_pair(pair)
    labels_a, labels_b, matrix = pair.pairs(0)
    images = [image for axis in figure.axes for image in axis.images]
    drawn = [image.get_array() for image in images]
    assert any(a.shape == matrix.shape and np.allclose(a, matrix.numpy()) for a in drawn)
    assert any(a.shape == (len(labels_a), 1) for a in drawn)
    assert any(a.shape == (1, len(labels_b)) for a in drawn)
    ticks = [t.get_text() for axis in figure.axes for t in axis.get_yticklabels()]
    assert set(labels_a) <= set(ticks)
    assert figure._suptitle.get_text() == f"cosine {float(pair.scores[0]):.3f}"
    every_axis = [inner for axis in figure.axes for inner in (axis, *axis.child_axes)]
    bars = [axis._colorbar.ax.get_xlabel() or axis._colorbar.ax.get_ylabel()
            for axis in every_axis if getattr(axis, "_colorbar", None)]  # fmt: skip
    assert sorted(bars) == ["word share of the score", "word-pair share of the score"]
    figure.savefig(tmp_path / "pair.png")
    assert (tmp_path / "pair.png").stat().st_size > 10_000
    strips_only = plot_sentence_pair(without_pairs)
    assert sum(len(axis.images) for axis in strips_only.axes) == 2
