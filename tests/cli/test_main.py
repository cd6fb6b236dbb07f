"""The entry point: ``python -m captum_fam``, the console script, exit statuses, one-line errors.

Subprocesses check the real entry point; the rest calls :func:`captum_fam.cli.main.main`
in-process, which is much faster than a fresh interpreter.
"""

from __future__ import annotations

import configparser
import importlib
from pathlib import Path

import pytest

from captum_fam import __version__
from captum_fam.cli import demo, explain
from captum_fam.cli.main import COMMANDS, build_parser, main

REPO = Path(__file__).resolve().parents[2]
ERROR_PREFIX = "captum-fam: error: "


def test_console_script_and_module_point_at_main(run_cli, tmp_path: Path) -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    script = config["options.entry_points"]["console_scripts"].strip()
    name, _, target = (part.strip() for part in script.partition("="))
    module, _, function = target.partition(":")
    assert name == "captum-fam"
    assert getattr(importlib.import_module(module), function) is main

    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"captum-fam {__version__}"


def test_one_module_per_command() -> None:
    assert (demo, explain) == COMMANDS
    parser = build_parser()
    for command in COMMANDS:
        assert callable(command.add_parser) and callable(command.run)
        name = command.__name__.rpartition(".")[2]
        args = parser.parse_args(
            [name, "q.png", "r.png", "--out", "o.png"][: 1 if name == "demo" else 5]
        )
        assert args.run is command.run


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "q.png", "r.png", "--out", "o.png", "--similarity", "manhattan"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_bad_input_subprocess_has_no_traceback(run_cli, files: Path) -> None:
    result = run_cli(
        "explain", "query.png", "ref_a.png", "--layer", "nope", "--out", "o.png", cwd=files
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    assert "Traceback" not in result.stderr
