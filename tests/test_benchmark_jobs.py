"""benchmarks/jobs.py --quick: the script runs on 1 and 2 processes and prints every row.

Its timings are never asserted (ratios are evidence from a quiet machine, not a test).
"""

from __future__ import annotations

import pytest
from test_benchmarks import run_script, table_rows

pytest.importorskip("zarr")


def test_jobs_quick_run_prints_every_row():
    from benchmarks import jobs

    done = run_script("benchmarks/jobs.py", "--quick", "--markdown")
    rows = table_rows(done.stdout, "processes x threads")
    assert rows[0] == [column.header for column in jobs.COLUMNS]
    assert [(row[0], row[1]) for row in rows[1:]] == [
        (setup, jobs.LABELS[name]) for setup in ("1 x 2", "2 x 1") for name in jobs.ROWS
    ]
    for row in rows[1:]:
        assert float(row[2]) > 0 and float(row[4]) > 0 and row[5].endswith("x")
    assert rows[1][5] == "1.000x" and rows[4][5] == "1.000x"
    assert [row[6].split(": ")[-1] in ("met", "MISSED") for row in rows[1:] if row[6]] == [True] * 2
    assert "2 processes x 1 thread vs 1 process x 2 threads" in done.stdout
    assert "Machine: " in done.stdout
