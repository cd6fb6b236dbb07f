"""One-line errors, once-only warnings and the shared FAM options."""

from __future__ import annotations

import argparse

import pytest

from captum_fam.cli.common import CLIError, WarningPrinter, add_fam_options, model_errors
from captum_fam.similarity import SIMILARITIES, WEIGHTINGS


def test_fam_options_come_from_the_library() -> None:
    parser = argparse.ArgumentParser()
    add_fam_options(parser)
    choices = {action.dest: action.choices for action in parser._actions if action.choices}
    assert choices == {"similarity": SIMILARITIES, "weighting": WEIGHTINGS}
    assert SIMILARITIES == ("cosine", "dot", "euclidean")


def test_warnings_print_once_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    printer = WarningPrinter()
    for message in ("first\n  second", "first second", "other"):
        printer(UserWarning(message), UserWarning, "f.py", 1)
    assert capsys.readouterr().err.splitlines() == [
        "captum-fam: warning: first second",
        "captum-fam: warning: other",
    ]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValueError("bad\nshape"), "bad shape; try this"),
        (RuntimeError("size mismatch. details"), "the model failed on the preprocessed images "
         "(size mismatch); check --model"),
        (AssertionError("Wrong image height!"), "(Wrong image height!)"),
    ],
)  # fmt: skip
def test_model_errors_become_one_line(error: Exception, expected: str) -> None:
    with pytest.raises(CLIError) as info, model_errors("try this"):
        raise error
    assert expected in str(info.value)
