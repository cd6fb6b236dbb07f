"""``captum-fam index build`` and ``captum-fam explain --index``: files, scores, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# Needs the command-line package (captum_fam/cli/ with common, options, ...) and FAISS.
pytest.importorskip("captum_fam.cli.common", reason="the captum_fam.cli package is not here")
faiss = pytest.importorskip("faiss")

from captum_fam import FeatureActivationMap  # noqa: E402
from captum_fam.cli.common import CLIError  # noqa: E402
from captum_fam.cli.index import default_ids_path, read_ids  # noqa: E402
from captum_fam.cli.main import main  # noqa: E402
from captum_fam.models import load_model  # noqa: E402

ERROR_PREFIX = "captum-fam: error: "


def build(files: Path, out: Path, *extra: str) -> list[str]:
    return ["index", "build", str(files / "gallery"), "--out", str(out), *extra]


def test_build_then_explain_matches_the_library(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_file = tmp_path / "gallery.faiss"
    assert main(build(files, index_file, "--batch-size", "3")) == 0
    out = capsys.readouterr()
    assert "4 images" in out.out and "unreadable image(s) skipped" in out.err
    assert index_file.is_file() and default_ids_path(index_file).is_file()
    paths, header = read_ids(default_ids_path(index_file))
    assert header["model"] == "shapes" and header["similarity"] == "cosine"
    assert sorted(p.resolve() for p in paths.values()) == sorted(
        p.resolve() for p in (files / "gallery").rglob("item*.png")
    )

    maps_file = tmp_path / "maps.npz"
    argv = ["explain", str(files / "query.png"), "--index", str(index_file), "--top-k", "2"]
    argv += ["--out", str(tmp_path / "why.png"), "--save-maps", str(maps_file)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 vectors, inner product; top 2:" in printed and "(index: inner product" in printed
    with np.load(maps_file) as saved:
        names, scores, maps = saved["references"].tolist(), saved["scores"], saved["maps"]
    assert maps.shape == (2, 1, 8, 8) and scores[0] >= scores[1]

    # The same hits, scores and maps as the library on the same image files.
    loaded = load_model("shapes")
    fam = FeatureActivationMap(loaded.model, loaded.layer)
    query = loaded.preprocess.load([files / "query.png"]).expand(2, -1, -1, -1)
    items = loaded.preprocess.load([Path(name).resolve() for name in names])
    torch.testing.assert_close(
        torch.from_numpy(scores), fam.similarity_scores(query, reference=items)
    )
    torch.testing.assert_close(torch.from_numpy(maps), fam.attribute(query, reference=items))
    every = loaded.preprocess.load(sorted((files / "gallery").rglob("item*.png")))
    best = fam.similarity_scores(query[:1].expand(4, -1, -1, -1), reference=every).max()
    torch.testing.assert_close(torch.tensor(scores[0]), best)


def test_compressed_and_euclidean_indexes(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pq = tmp_path / "pq.faiss"
    assert main(build(files, pq, "--factory", "IVF1,PQ4x2np")) == 0
    query = ["explain", str(files / "query.png"), "--top-k", "2", "--out", str(tmp_path / "a.png")]
    assert main([*query, "--index", str(pq)]) == 0  # unit norms known from the ids file
    l2 = tmp_path / "l2.faiss"
    ids = ["--ids", str(tmp_path / "l2.txt")]
    assert main(build(files, l2, "--similarity", "euclidean", *ids)) == 0
    capsys.readouterr()
    argv = [*query, "--index", str(l2), *ids]
    assert main(argv) == 2  # the query side must compare as the index does
    assert "similarity='euclidean'" in capsys.readouterr().err
    assert main([*argv, "--similarity", "euclidean"]) == 0
    assert "squared L2 distance" in capsys.readouterr().out


def test_bad_input_exits_2_with_one_line(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_file = tmp_path / "g.faiss"
    assert main(build(files, index_file)) == 0
    query = ["explain", str(files / "query.png"), "--out", str(tmp_path / "x.png")]
    cases = {
        "one of REFERENCE images": [*query, "--index", str(index_file), "--gallery", "d"],
        "go with --index FILE": [*query[:2], str(files / "ref_a.png"), *query[2:], "--ids", "x"],
        "no such file": [*query, "--index", str(tmp_path / "missing.faiss")],
        "ids file": [*query, "--index", str(index_file), "--ids", str(tmp_path / "none.txt")],
        "--factory Nonsense": build(files, tmp_path / "bad.faiss", "--factory", "Nonsense"),
    }
    for expected, argv in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(ERROR_PREFIX) and expected in err[-1], err
    assert not (tmp_path / "bad.faiss").exists()  # nothing half-written


def test_ids_file_lines(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("# comment\n7\ta.png\n9\t/abs/b.png\n")
    paths, header = read_ids(ids)
    assert paths == {7: tmp_path / "a.png", 9: Path("/abs/b.png")} and header == {}
    ids.write_text("a.png\nsub/b.png\n")  # bare paths: ids are line numbers
    assert read_ids(ids)[0] == {0: tmp_path / "a.png", 1: tmp_path / "sub/b.png"}
    ids.write_text("x\ty.png\n")
    with pytest.raises(CLIError, match="expected ID<TAB>PATH"):
        read_ids(ids)
