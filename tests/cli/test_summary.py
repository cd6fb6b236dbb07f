"""``captum-fam summary``: the settings and summaries of a store, and the best/worst figure."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

zarr = pytest.importorskip("zarr")

from captum_fam.cli.main import main  # noqa: E402

JOB = ["--chunk-size", "8", "--batch-size", "8", "--no-progress"]


def test_summary_prints_and_draws(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["explain-dataset", "--shapes", "16", "--out", "audit.zarr", *JOB]) == 0
    capsys.readouterr()
    assert main(["summary", "audit.zarr", "--count", "3"]) == 0
    out = capsys.readouterr().out
    assert "store audit.zarr: complete, 16 of 16 items" in out
    assert "layer block4" in out and "pointing rate" in out and "accuracy" in out
    figure = tmp_path / "audit-summary.png"
    assert f"figure: {figure}" in out
    width, height = Image.open(figure).size
    assert width > 600 and height > 400

    # An unfinished job: the completion record of one chunk removed.
    zarr.open_group("audit.zarr", mode="r+")["chunk_digest"][1] = 0
    group = zarr.open_group("audit.zarr", mode="r+")
    group.attrs.update({"status": "running"})
    del group.attrs["summary"]
    assert main(["summary", "audit.zarr", "--out", "unfinished.png"]) == 0
    out = capsys.readouterr().out
    assert "running, 8 of 16 items" in out and "unfinished: 1 of 2 chunks complete" in out


def test_summary_refuses_what_is_not_a_job_store(tmp_path: Path, capsys) -> None:
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    assert main(["summary", str(tmp_path / "other.zarr")]) == 2
    assert "not a store of captum-fam explain-dataset" in capsys.readouterr().err
    assert main(["summary", str(tmp_path / "missing.zarr")]) == 2
    assert "is not a zarr store" in capsys.readouterr().err
