"""Smoke test of benchmarks/text.py: the quick run completes and prints every row.

Timings are not asserted (a shared machine gives evidence, not a test); the full run's table is
in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "text.py"


def test_quick_run_prints_the_table():
    environment = {**os.environ, "PYTHONPATH": str(SCRIPT.parents[1])}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--markdown"],
        capture_output=True, text=True, timeout=900, env=environment, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| row | median ms | ratio to limit | peak RSS MiB")
    for label in ("limit: inference forwards", "FAM, both sides + token pairs",
                  "Captum LayerIntegratedGradients", "occlusion, one token at a time",
                  "baseline: model + inputs only"):  # fmt: skip
        row = next(line for line in lines if label in line)
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[3].isdigit(), row  # a peak was measured
    limit = next(line for line in lines if line.startswith("| limit"))
    assert "| 1.00x |" in limit
    assert any("time <= 1.05x" in line for line in lines)
