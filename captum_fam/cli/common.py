"""What the commands share: one-line errors, once-only warnings and the FAM options."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from captum_fam.similarity import SIMILARITIES, WEIGHTINGS

__all__ = [
    "PROG",
    "CLIError",
    "WarningPrinter",
    "add_fam_options",
    "model_errors",
    "one_line",
    "reason",
    "warn",
]

PROG = "captum-fam"


class CLIError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


def add_fam_options(parser: argparse.ArgumentParser) -> None:
    """``--similarity`` and ``--weighting``, with the library's choices."""
    parser.add_argument(
        "--similarity",
        choices=SIMILARITIES,
        default="cosine",
        help="how embeddings are compared (default: cosine)",
    )
    parser.add_argument(
        "--weighting",
        choices=WEIGHTINGS,
        default="reference",
        help="FAM channel weights: the score's coefficient of each channel (reference, an "
        "exact decomposition of the score) or each channel's term of the score "
        "(contribution, the paper's wording) (default: reference)",
    )


def warn(message: str) -> None:
    """A warning for the user, printed once as ``captum-fam: warning: ...`` by :func:`main`."""
    warnings.warn(message, UserWarning, stacklevel=2)


@contextlib.contextmanager
def model_errors(hint: str = "") -> Iterator[None]:
    """Report what FAM rejects, and a model failing on the images, as bad input."""
    suffix = f"; {hint}" if hint else ""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise CLIError(one_line(error) + suffix) from None
    except (RuntimeError, AssertionError) as error:
        # torchvision's transformers check the input size with assertions.
        raise CLIError(
            f"the model failed on the preprocessed images ({reason(error)}); check --model, "
            f"--layer, --image-size and --resize{suffix}"
        ) from None


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def reason(error: BaseException, limit: int = 160) -> str:
    """The first sentence of a third-party error message, for a parenthesis."""
    text = one_line(error).split(". ")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class WarningPrinter:
    """Print each distinct warning once, on one line, like the errors.

    Python's "once" filter cannot do this here: libraries that enter ``catch_warnings`` reset
    its registry, and a map drawn in several panels would warn once per panel.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        text = one_line(Warning(str(message)))
        if text not in self.seen:
            self.seen.add(text)
            print(f"{PROG}: warning: {text}", file=sys.stderr)
