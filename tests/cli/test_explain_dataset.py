"""``captum-fam explain-dataset``: image folders and the shapes world into a store, alone and
under torchrun, with the three kinds of references and one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

zarr = pytest.importorskip("zarr")

from captum_fam.cli.main import main  # noqa: E402
from captum_fam.zoo import SHAPE_CLASSES, make_shapes  # noqa: E402

JOB = ["--chunk-size", "8", "--batch-size", "4", "--no-progress"]
KINDS = ("circle", "square", "star")


def save_png(image: torch.Tensor, path: Path) -> None:
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``images/<class>/`` (12 scenes of 3 classes), ``protos/<class>/``, ``gallery/``."""
    root = tmp_path_factory.mktemp("dataset")
    scenes = make_shapes(12, classes=list(KINDS), seed=5, image_size=32)
    for index, (image, label) in enumerate(zip(scenes.images, scenes.labels[:, 0], strict=True)):
        (root / "images" / SHAPE_CLASSES[label]).mkdir(parents=True, exist_ok=True)
        save_png(image, root / "images" / SHAPE_CLASSES[label] / f"{index:02d}.png")
    for kind in KINDS:
        (root / "protos" / kind).mkdir(parents=True)
        for index, image in enumerate(make_shapes(2, classes=[kind], seed=7, image_size=32).images):
            save_png(image, root / "protos" / kind / f"{index}.png")
    (root / "gallery").mkdir()
    for index, image in enumerate(make_shapes(9, seed=9, image_size=32).images):
        save_png(image, root / "gallery" / f"g{index}.png")
    return root


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return {name: group[name][...] for name in group.array_keys()}


def test_folder_against_prototypes_gallery_and_reference(folders, tmp_path, capsys):
    images = str(folders / "images")
    assert main(["explain-dataset", images, "--prototypes", str(folders / "protos"),
                 "--out", str(tmp_path / "p.zarr"), *JOB]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "store " in out and "12 items, 2 chunk(s) computed" in out and "accuracy" in out
    group = zarr.open_group(tmp_path / "p.zarr", mode="r")
    assert group.attrs["class_names"] == sorted(KINDS)
    assert group.attrs["source"] == {"images": str((folders / "images").resolve())}
    assert sorted(group["labels"][:].tolist()) == group["labels"][:].tolist()  # class folders
    assert group["maps"].shape == (12, 1, 8, 8)  # the shapes model squashes to 64 px

    assert main(["explain-dataset", images, "--gallery", str(folders / "gallery"), "--top-k",
                 "3", "--out", str(tmp_path / "g.zarr"), *JOB]) == 0  # fmt: skip
    assert arrays(tmp_path / "g.zarr")["indices"].shape == (12, 3)

    reference = folders / "protos" / "star" / "0.png"
    assert main(["explain-dataset", images, "--reference", str(reference),
                 "--out", str(tmp_path / "r.zarr"), *JOB]) == 0  # fmt: skip
    assert (arrays(tmp_path / "r.zarr")["indices"] == 0).all()

    # The same prototypes as an embeddings file with class names give the same store.
    prototypes = zarr.open_group(tmp_path / "p.zarr", mode="r")["prototypes"][:]
    names = [sorted(KINDS)[c] for c in zarr.open_group(tmp_path / "p.zarr")["classes"][:]]
    np.savez(tmp_path / "protos.npz", embeddings=prototypes, classes=np.array(names))
    assert main(["explain-dataset", images, "--prototypes", str(tmp_path / "protos.npz"),
                 "--out", str(tmp_path / "f.zarr"), *JOB]) == 0  # fmt: skip
    from_file, from_folder = arrays(tmp_path / "f.zarr"), arrays(tmp_path / "p.zarr")
    assert np.array_equal(from_file["maps"], from_folder["maps"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give the references: --prototypes, --gallery or --reference"),
        (["--prototypes", "P", "--gallery", "G"], "give one of --prototypes, --gallery"),
        (["--gallery", "x.csv"], "expected a folder of images or an embeddings file"),
        (["--reference", "missing.npy"], "missing.npy: no such file"),
        (["--gallery", "G", "--top-k", "0"], "--top-k must be at least 1"),
        (["--gallery", "G", "--device", "tpu:0"], "--device must be auto, cpu, cuda or cuda:N"),
        (["--gallery", "G", "--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_input_is_one_line(folders, tmp_path, capsys, extra, message):
    code = main(["explain-dataset", str(folders / "images"), "--out", str(tmp_path / "x.zarr"),
                 *[a.replace("P", str(folders / "protos")).replace("G", str(folders / "gallery"))
                   if a in ("P", "G") else a for a in extra], *JOB])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("captum-fam: error: ") and message in error


def test_unlabelled_folder_has_no_prototypes(folders, tmp_path, capsys):
    protos, out = str(folders / "protos"), str(tmp_path / "x.zarr")
    command = ["explain-dataset", str(folders / "gallery"), "--prototypes", protos, "--out", out]
    assert main([*command, *JOB]) == 2
    assert "one subfolder per class" in capsys.readouterr().err


def test_torchrun_two_processes_equal_one(tmp_path):
    """``torchrun --nproc-per-node 2 -m captum_fam explain-dataset --shapes N``: the store of
    one process, and a rerun with another process count is refused in one line."""
    repo = Path(__file__).resolve().parents[2]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "captum_fam",
               "explain-dataset", "--shapes", "20", "--out", str(tmp_path / "two.zarr"),
               "--map-dtype", "float32", *JOB]  # fmt: skip
    env = {"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "20 items, 3 chunk(s) computed" in done.stdout and "2 process(es)" in done.stdout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["explain-dataset", "--shapes", "20", "--out", str(tmp_path / "one.zarr"),
                     "--map-dtype", "float32", *JOB]) == 0  # fmt: skip
        two, one = arrays(tmp_path / "two.zarr"), arrays(tmp_path / "one.zarr")
        assert sorted(two) == sorted(one)
        assert all(np.array_equal(two[k], one[k]) for k in one)
        assert main(["explain-dataset", "--shapes", "20", "--out", str(tmp_path / "two.zarr"),
                     "--map-dtype", "float32", *JOB]) == 2  # fmt: skip
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_device_cuda_without_a_gpu_is_refused(folders, tmp_path, capsys):
    argv = ["explain-dataset", str(folders / "images"), "--gallery", str(folders / "gallery"),
            "--device", "cuda", "--out", str(tmp_path / "x.zarr"), *JOB]  # fmt: skip
    assert main(argv) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()
