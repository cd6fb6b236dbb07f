"""The ``captum-fam`` command line: demo, explain (references, gallery, models) and bad input.

Subprocesses (``python -m captum_fam``) check the real entry point and exit statuses; the rest
calls :func:`captum_fam.cli.main` in-process, which is much faster than a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captum_fam import FeatureActivationMap
from captum_fam.cli import load_model, main
from captum_fam.zoo import make_shapes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR_PREFIX = "captum-fam: error: "


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MPLBACKEND="Agg")
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "captum_fam", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def save_png(image: torch.Tensor, path: Path) -> None:
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
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


def test_demo_writes_figure_and_prints_scores(tmp_path: Path) -> None:
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


def test_explain_subprocess_saves_figure_and_torch_maps(images: Path, tmp_path: Path) -> None:
    maps_file = tmp_path / "maps.pt"
    result = run_cli(
        "explain",
        str(images / "query.png"),
        str(images / "ref_a.png"),
        str(images / "ref_b.png"),
        "--out",
        str(tmp_path / "out.png"),
        "--save-maps",
        str(maps_file),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.png").read_bytes()[:8] == PNG_SIGNATURE
    saved = torch.load(maps_file, weights_only=True)
    assert saved["references"] == ["ref_a.png", "ref_b.png"]
    assert saved["query"] == "query.png"
    assert saved["maps"].shape == (2, 1, 8, 8)  # 64 px through a stride-8 layer
    assert saved["reference_maps"].shape == (2, 1, 8, 8)
    assert saved["scores"].shape == (2,)
    assert (saved["layer"], saved["similarity"], saved["weighting"]) == (
        "block4",
        "cosine",
        "reference",
    )
    for name, score in zip(saved["references"], saved["scores"].tolist(), strict=True):
        assert f"{name}  cosine {score:.4f}" in result.stdout


def test_explain_in_process_npz_matches_the_library(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maps_file = tmp_path / "maps.npz"
    paths = [images / "query.png", images / "ref_a.png", images / "ref_b.png"]
    argv = ["explain", *map(str, paths), "--out", str(tmp_path / "out.png")]
    argv += ["--similarity", "dot", "--weighting", "contribution", "--save-maps", str(maps_file)]
    assert main(argv) == 0
    assert f"figure: {tmp_path / 'out.png'}" in capsys.readouterr().out

    with np.load(maps_file) as saved:  # no allow_pickle needed
        assert saved["references"].tolist() == ["ref_a.png", "ref_b.png"]
        assert saved["maps"].shape == (2, 1, 8, 8)
        maps, scores = torch.from_numpy(saved["maps"]), torch.from_numpy(saved["scores"])
        assert str(saved["similarity"]) == "dot"

    loaded = load_model("shapes")
    fam = FeatureActivationMap(
        loaded.model, loaded.layer, similarity="dot", weighting="contribution"
    )
    batch = loaded.preprocess.load(paths)
    query = batch[:1].expand(2, -1, -1, -1)
    torch.testing.assert_close(scores, fam.similarity_scores(query, reference=batch[1:]))
    torch.testing.assert_close(maps, fam.attribute(query, reference=batch[1:]))


def test_gallery_top_k(images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    maps_file = tmp_path / "top.npz"
    argv = ["explain", str(images / "query.png"), "--gallery", str(images / "gallery")]
    argv += ["--top-k", "2", "--batch-size", "2", "--out", str(tmp_path / "top.png")]
    assert main([*argv, "--save-maps", str(maps_file)]) == 0
    captured = capsys.readouterr()
    assert "gallery" in captured.out and "4 images, 1 unreadable skipped" in captured.out
    assert "embedding gallery" in captured.err  # the progress bar
    with np.load(maps_file) as saved:
        names, scores = saved["references"].tolist(), saved["scores"]
        assert saved["maps"].shape == (2, 1, 8, 8)
    assert len(names) == 2
    assert set(names) <= {"item2.png", "item3.png", "item4.png", "sub/item5.png"}
    assert scores[0] >= scores[1]
    assert (tmp_path / "top.png").stat().st_size > 0

    # The retrieved items and their maps are those of the library on the same images.
    loaded = load_model("shapes")
    fam = FeatureActivationMap(loaded.model, loaded.layer)
    query = loaded.preprocess.load([images / "query.png"]).expand(2, -1, -1, -1)
    items = loaded.preprocess.load([images / "gallery" / name for name in names])
    torch.testing.assert_close(
        torch.from_numpy(scores), fam.similarity_scores(query, reference=items)
    )
    every = loaded.preprocess.load(sorted((images / "gallery").rglob("item*.png")))
    best = fam.similarity_scores(query[:1].expand(4, -1, -1, -1), reference=every).max()
    torch.testing.assert_close(torch.tensor(scores[0]), best)


def test_torchvision_resnet18_default_layer(
    images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torchvision")
    maps_file = tmp_path / "resnet.pt"
    argv = ["explain", str(images / "query.png"), str(images / "ref_a.png")]
    argv += ["--model", "torchvision:resnet18", "--image-size", "64"]
    argv += ["--out", str(tmp_path / "resnet.png"), "--save-maps", str(maps_file)]
    assert main(argv) == 0
    assert "layer layer4" in capsys.readouterr().out
    saved = torch.load(maps_file, weights_only=True)
    assert saved["layer"] == "layer4"
    assert saved["maps"].shape == (1, 1, 2, 2)  # 64 px at stride 32


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.png", "ref_a.png"], "image not found"),
        (["query.png", "gallery/broken.png"], "cannot read image"),
        (["query.png", "ref_a.png", "--layer", "blok4"], "closest: block4"),
        (["query.png", "ref_a.png", "--model", "nonsense"], "unknown model 'nonsense'"),
        (["query.png", "ref_a.png", "--model", "torch.nn:Identity"], "pass --layer"),
        (["query.png", "--gallery", "empty"], "holds no images"),
        (["query.png", "ref_a.png", "--save-maps", "maps.csv"], "unsupported extension"),
        (["query.png", "ref_a.png", "--weights", "DEFAULT"], "torchvision:NAME models only"),
        (["query.png"], "at least one REFERENCE"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str],
    expected: str,
    images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(images)
    assert main(["explain", *args, "--out", str(tmp_path / "out.png")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), captured.err
    assert expected in lines[0]
    assert captured.out == ""
    assert not (tmp_path / "out.png").exists()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "q.png", "r.png", "--out", "o.png", "--similarity", "manhattan"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bad_input_subprocess_has_no_traceback(images: Path, tmp_path: Path) -> None:
    result = run_cli(
        "explain", "query.png", "ref_a.png", "--layer", "nope", "--out", "o.png", cwd=images
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    assert "Traceback" not in result.stderr
