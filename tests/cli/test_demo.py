"""``captum-fam demo``: the figure, the printed scores and the per-object map mass."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

from captum_fam.cli.main import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_demo_writes_figure_and_prints_scores(run_cli, tmp_path: Path) -> None:
    result = run_cli("demo", "--out", "demo.png", "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    figure = tmp_path / "demo.png"
    assert figure.stat().st_size > 10_000
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    references = [line for line in result.stdout.splitlines() if line.startswith("  reference")]
    assert len(references) == 2
    assert all("cosine" in line and "FAM" in line and "IG" in line for line in references)
    assert f"figure: {figure}" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_figure_shows_the_printed_mass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SVG text kept as text, so the figure's words can be read back.
    monkeypatch.setitem(matplotlib.rcParams, "svg.fonttype", "none")
    out = tmp_path / "demo.svg"
    assert main(["demo", "--out", str(out), "--similarity", "dot"]) == 0
    printed = capsys.readouterr().out
    svg = out.read_text()
    rows = [line for line in printed.splitlines() if line.startswith("  reference")]
    for row in rows:
        fam_shares = row.split("FAM ")[1].split(";")[0]  # e.g. "triangle 8%, star 2%"
        assert f"mass on {fam_shares}" in svg
    assert "share of the panel" in svg  # the colour bar says what the colour means
    assert "dot" in svg
