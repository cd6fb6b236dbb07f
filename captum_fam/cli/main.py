"""The ``captum-fam`` entry point: the parser, one subcommand per module, one-line errors.

Each command module (:mod:`~captum_fam.cli.demo`, :mod:`~captum_fam.cli.explain`) exposes
``add_parser(subparsers)`` and ``run(args)``. Bad input ends with exit status 2 and one
``captum-fam: error: ...`` line; each distinct warning is printed once.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from captum_fam.cli import demo, explain
from captum_fam.cli.common import PROG, CLIError, WarningPrinter, one_line
from captum_fam.images import ImageReadError
from captum_fam.models import ModelLoadError

__all__ = ["build_parser", "main"]

COMMANDS = (demo, explain)


def build_parser() -> argparse.ArgumentParser:
    """The ``captum-fam`` argument parser, with one subcommand per command module."""
    from captum_fam import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Feature Activation Map (FAM): gradient-free explanations of "
        "similarity-based models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers).set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run the ``captum-fam`` command line.

    Args:
        argv (Sequence[str], optional): Arguments without the program name.
                    Default: ``sys.argv[1:]``

    Returns:
        int: the exit status, 0 on success, 2 for bad input (one ``captum-fam: error:``
        line on stderr). argparse's usage errors raise ``SystemExit(2)``.

    Examples::

        >>> from captum_fam.cli.main import main
        >>> main(["demo", "--out", "demo.png"])
        0
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = WarningPrinter()
        try:
            return int(args.run(args))
        except (CLIError, ImageReadError, ModelLoadError) as error:
            print(f"{PROG}: error: {one_line(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    raise SystemExit(main())
