"""``captum-fam explain-text``: the score, both sentences' word shares, the figure, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from captum_fam.cli.main import main  # noqa: E402
from captum_fam.text import explain_sentences, load_sentence_model, sentence_fam  # noqa: E402

FACTORY = "captum_fam.zoo.text_encoders:random_text_encoder"
FIRST, SECOND = "A man is playing a guitar.", "Someone plays an instrument!"


def test_prints_the_score_and_the_shares_and_writes_the_figure(tmp_path: Path, capsys) -> None:
    out, html = tmp_path / "pair.png", tmp_path / "pair.html"
    status = main(["explain-text", FIRST, SECOND, "--model", FACTORY, "--out", str(out),
                   "--html", str(html)])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    model, tokenizer = load_sentence_model(FACTORY)
    expected = explain_sentences(sentence_fam(model), tokenizer, [FIRST], [SECOND])
    lines = captured.out.splitlines()
    assert lines[0] == f"cosine {float(expected.scores[0]):.4f}"
    assert lines[1] == f"a: {FIRST}" and lines[3] == f"b: {SECOND}"
    labels, values = expected.words(0, "b")
    assert lines[4].split() == [
        cell for label, value in zip(labels, values.tolist(), strict=True)
        for cell in (label, f"{value:+.3f}")
    ]  # fmt: skip
    assert lines[-2:] == [f"figure: {out.resolve()}", f"html: {html.resolve()}"]
    assert out.stat().st_size > 10_000 and "instrument" in html.read_text()
    assert "random weights" in captured.err


def test_a_sentence_transformers_folder_and_pieces(tmp_path: Path, capsys) -> None:
    pytest.importorskip("sentence_transformers")
    from captum_fam.zoo.text_encoders import random_sentence_transformer

    sentence_model = random_sentence_transformer(tmp_path, hidden_size=32, normalize=True)
    status = main(["explain-text", "swimming dogs", "a dog", "--model", str(tmp_path / "model"),
                   "--pieces", "--special-tokens", "--out", str(tmp_path / "st.png")])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    score = sentence_model.similarity_pairwise(
        sentence_model.encode(["swimming dogs"], convert_to_tensor=True),
        sentence_model.encode(["a dog"], convert_to_tensor=True),
    )
    lines = captured.out.splitlines()
    assert lines[0] == f"cosine {float(score[0]):.4f}"
    cells = lines[2].split()
    assert cells[0] == "[CLS]" and "##ing" in cells and cells[-2] == "[SEP]"
    shares = [float(value) for value in cells[1::2]]
    assert sum(shares) == pytest.approx(float(score[0]), abs=5e-3)  # printed to 3 decimals


def test_class_token_pooling_draws_without_pairs(tmp_path: Path, capsys) -> None:
    status = main(["explain-text", FIRST, SECOND, "--model", FACTORY, "--pooling", "cls",
                   "--out", str(tmp_path / "cls.png")])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "no word-pair matrix" in captured.err
    assert (tmp_path / "cls.png").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "nope"], "unknown sentence model 'nope'"),
        (["--model", "captum_fam.zoo.text_encoders:missing"], "has no attribute 'missing'"),
        (
            ["--model", "captum_fam.zoo.text_encoders:word_piece_tokenizer"],
            "word_piece_tokenizer() returned",
        ),
        (["--model", "captum_fam.zoo:load_shapes_model"], "found no list of transformer blocks"),
        (["--model", FACTORY, "--layer", "encoder.layerx"], "unknown layer 'encoder.layerx'"),
        (["--model", FACTORY, "--out", "pair.unknown"], "cannot write a figure to"),
        (["--model", "."], "holds neither a sentence-transformers model"),
    ],
)
def test_bad_input_is_one_line_and_status_2(arguments, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = main(["explain-text", FIRST, SECOND, *arguments])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2
    assert error.startswith("captum-fam: error: ") and message in error


def test_an_empty_sentence_is_refused(capsys) -> None:
    assert main(["explain-text", " ", SECOND, "--model", FACTORY]) == 2
    assert "the first sentence is empty" in capsys.readouterr().err


def test_model_errors_pass_through_as_bad_input(tmp_path, capsys, monkeypatch) -> None:
    """A factory that fails on call: its own exception is not swallowed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_factory.py").write_text("def build():\n    raise OSError('disk')\n")
    with pytest.raises(OSError, match="disk"):
        main(["explain-text", FIRST, SECOND, "--model", "broken_factory:build"])
