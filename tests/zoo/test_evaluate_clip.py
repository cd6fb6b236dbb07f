"""Tests of the shapes CLIP's evaluation (captum_fam.zoo.evaluate_clip)."""

from __future__ import annotations

from zoo_cases import CLIP_CARD, CLIP_TEST_SEED, CLIP_TOLERANCE

from captum_fam.zoo.evaluate_clip import comparison_markdown, main, recall_at_1


def test_retrieval_recall_floor(clip):
    i2t, t2i = recall_at_1(clip, seed=CLIP_TEST_SEED, pools=2)
    assert i2t >= max(0.9, CLIP_CARD["recall_image_to_text"] - CLIP_TOLERANCE)
    assert t2i >= max(0.85, CLIP_CARD["recall_text_to_image"] - CLIP_TOLERANCE)


def test_comparison_tables_name_every_method(clip):
    text = comparison_markdown(clip, seed=CLIP_TEST_SEED, scenes=12)
    for name in ("| FAM |", "| contrastive LayerGradCam |", "| IntegratedGradients |",
                 "| LayerIntegratedGradients |", "| reference-agnostic |",
                 "- image tower: projection", "- text tower: projection"):  # fmt: skip
        assert name in text


def test_command_line_prints_every_figure(capsys):
    main(["--pools", "1", "--scenes", "20", "--seed", str(CLIP_TEST_SEED)])
    printed = capsys.readouterr().out
    for key in (
        "recall1_image_to_text_seen",
        "token_pointing",
        "image_pointing_contrastive_object2",
    ):
        assert key in printed
