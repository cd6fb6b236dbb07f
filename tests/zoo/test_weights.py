"""Tests of the zoo's weights files (captum_fam.zoo.weights) and of every shipped file's digest."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from captum_fam.zoo import load_shapes_clip, load_shapes_head_model, load_shapes_model
from captum_fam.zoo.clip import CLIP_WEIGHTS_PATH, CLIP_WEIGHTS_SHA256
from captum_fam.zoo.model import (
    HEAD_WEIGHTS_PATH,
    HEAD_WEIGHTS_SHA256,
    WEIGHTS_PATH,
    WEIGHTS_SHA256,
)
from captum_fam.zoo.weights import (
    check_weights_file,
    report_written,
    sha256_of_file,
    write_weights,
)

SHIPPED: list[tuple[Path, str, Callable]] = [
    (WEIGHTS_PATH, WEIGHTS_SHA256, load_shapes_model),
    (HEAD_WEIGHTS_PATH, HEAD_WEIGHTS_SHA256, load_shapes_head_model),
    (CLIP_WEIGHTS_PATH, CLIP_WEIGHTS_SHA256, load_shapes_clip),
]


@pytest.mark.parametrize(("path", "digest", "load"), SHIPPED, ids=lambda v: getattr(v, "name", ""))
def test_shipped_files_match_their_digests(path, digest, load):
    assert sha256_of_file(path) == digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stat().st_size < 5_000_000


@pytest.mark.parametrize(("path", "digest", "load"), SHIPPED, ids=lambda v: getattr(v, "name", ""))
def test_loaders_refuse_tampered_missing_or_other_files(path, digest, load, tmp_path):
    tampered = tmp_path / path.name
    shutil.copy(path, tampered)
    load(path=tampered)  # a faithful copy loads with the loader's own digest
    other = next(p for p, _, _ in SHIPPED if p != path)
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load(path=other)  # each loader holds its own digest
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load(path=tampered, sha256=digest)
    with pytest.raises(FileNotFoundError, match="weights not found"):
        load(path=tmp_path / "missing.pt")


def test_a_digest_of_none_skips_the_check(tmp_path):
    file = tmp_path / "mine.pt"
    write_weights({"w": torch.ones(2)}, file)
    check_weights_file(file, None, "my model")
    with pytest.raises(RuntimeError, match="my model weights"):
        check_weights_file(file, "0" * 64, "my model")


def test_written_bytes_depend_only_on_the_state(tmp_path, capsys):
    state = {"w": torch.arange(6.0).reshape(2, 3), "config": {"dim": 3}}
    first, second = tmp_path / "a.pt", tmp_path / "sub" / "other_name.pt"
    second.parent.mkdir()
    write_weights(state, first)
    write_weights(state, second)
    assert first.read_bytes() == second.read_bytes()
    loaded = torch.load(second, weights_only=True)
    assert torch.equal(loaded["w"], state["w"]) and loaded["config"] == {"dim": 3}
    report_written(first, start=0.0)
    printed = capsys.readouterr().out
    assert f"sha256 {sha256_of_file(first)}" in printed and "wrote" in printed
