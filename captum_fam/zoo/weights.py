"""The zoo's weights files: written with fixed bytes, checked by SHA-256 before loading.

Every shipped model (the shapes CNNs, the shapes CLIP) is saved by :func:`write_weights`, whose
bytes depend only on the weights, so retraining from the same seed reproduces the shipped
file's digest, and loaded after :func:`check_weights_file`.
"""

from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["check_weights_file", "report_written", "sha256_of_file", "write_weights"]


def sha256_of_file(path: str | Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights_file(file: Path, sha256: str | None, what: str) -> None:
    """Raise ``FileNotFoundError`` if ``file`` is missing, ``RuntimeError`` if its SHA-256 is
    not ``sha256`` (``None`` skips the check: weights the user trained)."""
    if not file.is_file():
        raise FileNotFoundError(f"{what} weights not found at {file}")
    if sha256 is not None:
        actual = sha256_of_file(file)
        if actual != sha256.lower():
            raise RuntimeError(
                f"SHA-256 mismatch for {what} weights {file}: expected {sha256}, got "
                f"{actual}. The file is corrupted or was replaced; reinstall captum-fam or pass "
                "sha256=None to load weights you trained yourself."
            )


def write_weights(state: Any, path: str | Path) -> None:
    """Saves ``state`` with ``torch.save``; the bytes depend only on ``state``, not on ``path``."""
    # torch.save names the archive after the file; a buffer keeps the bytes (and hash) fixed.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    Path(path).write_bytes(buffer.getvalue())


def report_written(path: Path, start: float) -> None:
    """What a training command prints at the end: the file, its size, the time, its SHA-256."""
    minutes = (time.perf_counter() - start) / 60
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {minutes:.1f} min")
    print(f"sha256 {sha256_of_file(path)}")
