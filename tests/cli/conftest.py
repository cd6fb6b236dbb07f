"""Image files for the command line's tests, and a runner for the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_fam.zoo import make_shapes

REPO = Path(__file__).resolve().parents[2]


def save_png(image: torch.Tensor, path: Path) -> None:
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-object query, two references and a small gallery with one broken file."""
    root = tmp_path_factory.mktemp("images")
    save_png(make_shapes(1, objects=2, seed=4, image_size=32).images[0], root / "query.png")
    singles = make_shapes(6, objects=1, seed=3, image_size=32).images
    save_png(singles[0], root / "ref_a.png")
    save_png(singles[1], root / "ref_b.png")
    gallery = root / "gallery"
    (gallery / "sub").mkdir(parents=True)
    for index in range(2, 6):
        save_png(singles[index], gallery / ("sub" if index == 5 else ".") / f"item{index}.png")
    (gallery / "broken.png").write_text("not an image")
    (root / "empty").mkdir()
    return root


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``python -m captum_fam ARGS`` in a fresh interpreter, with this checkout first."""

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, MPLBACKEND="Agg")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        return subprocess.run(
            [sys.executable, "-m", "captum_fam", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    return run
