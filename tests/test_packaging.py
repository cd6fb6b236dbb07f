"""What a user installs: the wheel's contents and the Makefile's two entry commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built offline from a copy of the sources (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "captum_fam", source / "captum_fam", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*command, "--no-index", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("captum_fam-*.whl")
    return zipfile.ZipFile(built)


def test_wheel_holds_license_weights_and_type_marker(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
    assert licenses, names
    assert "BSD 3-Clause License" in wheel.read(licenses[0]).decode()
    shipped = sorted(p.name for p in (REPO / "captum_fam" / "zoo").glob("*.pt"))
    assert shipped and all(f"captum_fam/zoo/{name}" in names for name in shipped)
    assert "captum_fam/py.typed" in names
    assert "captum_fam/cli/main.py" in names


def test_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    for line in (
        "Author: captum-fam contributors",
        "License-File: LICENSE",
        "Project-URL: Source, https://github.com/captum-fam/captum-fam",
        "Classifier: Typing :: Typed",
    ):
        assert line in text
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "captum-fam = captum_fam.cli.main:main" in wheel.read(entry_points).decode()


def test_license_matches_setup_cfg() -> None:
    assert "license = BSD-3-Clause" in (REPO / "setup.cfg").read_text()
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "captum-fam contributors" in text


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("target", "extras"), [("demo", '".[vision]"'), ("test", '".[dev,vision]"')]
)
def test_make_installs_what_each_command_needs(target: str, extras: str, tmp_path: Path) -> None:
    # A fresh checkout: no .venv yet. `make -n` prints the commands without running them.
    for name in ("Makefile", "setup.cfg", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    result = subprocess.run(
        ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    assert "-m venv .venv" in commands
    installs = [line for line in commands.splitlines() if "pip install --quiet -e" in line]
    assert len(installs) == 1 and installs[0].endswith(extras), installs
