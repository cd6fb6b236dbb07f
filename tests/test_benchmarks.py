"""benchmarks/: the harness's pure parts and a smoke run (--quick) of every benchmark script.

The smoke runs check that each script runs and prints every row and column; their timings are
never asserted (ratios are evidence from a quiet machine, not a test).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from benchmarks import harness

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """A benchmark run as its users run it, with this checkout's captum_fam first."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """The Markdown table starting with ``| first_header``: header, then rows, as cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not line.startswith("| ---"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


# --- tables ----------------------------------------------------------------------------------


def small_table() -> harness.Table:
    table = harness.Table(
        [harness.Column("name", "row"), harness.Column("ms", "median ms", "right")]
    )
    table.add(name="forward", ms="1294")
    table.add(ms="12", name="FAM | cached")  # keys, not positions
    return table


def test_table_renders_aligned_text():
    assert small_table().text() == textwrap.dedent(
        """\
        row           median ms
        -----------------------
        forward            1294
        FAM | cached         12"""
    )


def test_table_renders_markdown_with_alignment_and_escaped_pipes():
    assert small_table().markdown() == textwrap.dedent(
        """\
        | row | median ms |
        | --- | ---: |
        | forward | 1294 |
        | FAM \\| cached | 12 |"""
    )
    assert small_table().render(markdown=True) == small_table().markdown()
    assert small_table().render(markdown=False) == small_table().text()


def test_table_rows_need_exactly_the_declared_columns():
    table = small_table()
    with pytest.raises(ValueError, match=r"missing \['ms'\]"):
        table.add(name="x")
    with pytest.raises(ValueError, match=r"unknown \['peak'\]"):
        table.add(name="x", ms="1", peak="2")
    with pytest.raises(ValueError, match="single lines"):
        table.add(name="two\nlines", ms="1")
    assert len(table.rows) == 2  # nothing half-added


def test_table_columns_are_checked():
    with pytest.raises(ValueError, match="unique"):
        harness.Table([harness.Column("a", "A"), harness.Column("a", "B")])
    with pytest.raises(ValueError, match="at least one"):
        harness.Table([])
    with pytest.raises(ValueError, match="align"):
        harness.Column("a", "A", "centre")


def test_speed_columns_frame_the_ratios_and_name_the_peak():
    ratio = harness.Column("ratio", "ratio to limit", "right")
    keys = [c.key for c in harness.speed_columns((ratio,))]
    assert keys == ["row", "median", "spread", "ratio", "peak", "above", "target"]
    peak = harness.speed_columns((ratio,), "peak CUDA MiB")[4]
    assert (peak.key, peak.header) == ("peak", "peak CUDA MiB")


# --- timing ----------------------------------------------------------------------------------


def test_median_and_spread():
    assert harness.median_and_spread([3.0, 1.0, 10.0]) == (3.0, 1.0, 10.0)
    assert harness.median_and_spread([4.0, 1.0, 2.0, 3.0]) == (2.5, 1.0, 4.0)
    timing = harness.Timing((5.0, 1.0, 2.0))
    assert timing.median == 2.0 and timing.spread == (1.0, 5.0)
    assert timing.spread_text() == "1-5" and timing.spread_text(1) == "1.0-5.0"
    with pytest.raises(ValueError, match="at least one"):
        harness.median_and_spread([])


def test_rotation_starts_each_row_once_per_cycle():
    names = ["a", "b", "c"]
    orders = [harness.rotation(names, repeat) for repeat in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert harness.rotation(names, 4) == orders[1]
    assert harness.rotation([], 2) == []


def test_time_interleaved_order_warmups_and_limited_repeats():
    calls: list[str] = []

    def row(name: str):
        return lambda: calls.append(name)

    times = harness.time_interleaved(
        {"a": row("a"), "b": row("b"), "c": row("c")},
        repeats=3,
        repeats_of={"c": 1},
        warmups={"b": row("b-warm-up")},
        progress=None,
    )
    assert calls == [
        "a", "b-warm-up", "c",  # warm-ups, b's replaced
        "a", "b", "c",  # repeat 1
        "b", "a",  # repeat 2: starts at b; c is done
        "a", "b",  # repeat 3: would start at c
    ]  # fmt: skip
    assert [len(times[n].milliseconds) for n in "abc"] == [3, 3, 1]


def test_time_interleaved_measures_milliseconds():
    times = harness.time_interleaved(
        {"sleep": lambda: time.sleep(0.02), "none": lambda: None}, repeats=2, progress=None
    )
    assert 20 <= times["sleep"].median < 2000
    assert times["none"].median < times["sleep"].median


def test_time_interleaved_checks_its_arguments():
    with pytest.raises(ValueError, match="at least one"):
        harness.time_interleaved({}, 1)
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        harness.time_interleaved({"a": lambda: None}, 0)
    with pytest.raises(ValueError, match=r"repeats_of names rows that do not exist: \['b'\]"):
        harness.time_interleaved({"a": lambda: None}, 1, repeats_of={"b": 1})
    with pytest.raises(ValueError, match=r"warmups names rows that do not exist: \['b'\]"):
        harness.time_interleaved({"a": lambda: None}, 1, warmups={"b": lambda: None})
    with pytest.raises(ValueError, match="at least 1 repeat"):
        harness.time_interleaved({"a": lambda: None}, 1, repeats_of={"a": 0})


# --- peak memory -----------------------------------------------------------------------------


def test_parse_peak_reads_the_last_json_line():
    stdout = 'loading\n{"row": "fam", "peak_rss_mib": 812.5}\n'
    assert harness.parse_peak(stdout, "fam") == 812.5
    with pytest.raises(ValueError, match="reported row 'ig'"):
        harness.parse_peak('{"row": "ig", "peak_rss_mib": 1}', "fam")
    for broken in ("", "no json", '{"row": "fam"}', '{"row": "fam", "peak_rss_mib": "x"}'):
        with pytest.raises(ValueError, match="printed no JSON line"):
            harness.parse_peak(broken, "fam")


def test_report_peak_prints_what_parse_peak_reads(capsys):
    ran = []
    harness.report_peak("fam", lambda: ran.append(True))
    peak = harness.parse_peak(capsys.readouterr().out, "fam")
    assert ran == [True]
    assert 0 < peak <= harness.peak_rss_mib()  # the peak only grows
    harness.report_peak(harness.BASELINE, None)
    assert harness.parse_peak(capsys.readouterr().out, harness.BASELINE) > 0
    harness.report_peak("fam", None, peak=lambda: 12.5)  # another measure, e.g. CUDA memory
    assert harness.parse_peak(capsys.readouterr().out, "fam") == 12.5


def test_child_command_and_launcher(monkeypatch):
    command = harness.child_command(["python", "x.py"], "fam", ["--pairs=2"])
    assert command == ["python", "x.py", f"{harness.PEAK_ROW_OPTION}=fam", "--pairs=2"]
    module = types.ModuleType("__main__")
    module.__spec__ = types.SimpleNamespace(name="benchmarks.speed")
    monkeypatch.setitem(sys.modules, "__main__", module)
    assert harness.launcher() == [sys.executable, "-m", "benchmarks.speed"]
    script = types.ModuleType("__main__")
    script.__spec__ = None
    script.__file__ = str(ROOT / "benchmarks" / "speed.py")
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert harness.launcher() == [sys.executable, str(ROOT / "benchmarks" / "speed.py")]


CHILD = """
import sys
import numpy as np
from benchmarks import harness

row = next(a.split("=", 1)[1] for a in sys.argv if a.startswith(harness.PEAK_ROW_OPTION))
if row == "crash":
    raise SystemExit("this row crashes")
big = None

def allocate():
    global big
    big = np.ones(256 * 2**20 // 8)  # 256 MiB, touched

harness.report_peak(row, allocate if row == "big" else None)
"""


def test_measure_peak_memory_subtracts_the_baseline_child(tmp_path, monkeypatch):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    command = [sys.executable, str(script)]
    memory = harness.measure_peak_memory(
        ["big", "small"], command=command, workers=2, progress=None
    )
    assert set(memory.peaks) == {harness.BASELINE, "big", "small"}
    # The parent's size does not leak into the children (VmHWM, not ru_maxrss).
    assert 200 < memory.above_baseline("big") < 320
    assert abs(memory.above_baseline("small")) < 30
    with pytest.raises(RuntimeError, match="'crash' exited with 1:\n.*this row crashes"):
        harness.measure_peak_memory(["crash"], command=command, progress=None)


# --- smoke runs ------------------------------------------------------------------------------


def test_speed_quick_run_prints_every_row_and_target():
    pytest.importorskip("torchvision")
    from benchmarks import speed

    done = run_script("benchmarks/speed.py", "--quick", "--markdown")
    rows = table_rows(done.stdout, "row")
    assert rows[0] == [column.header for column in speed.COLUMNS]
    labels = [row[0] for row in rows[1:]]
    assert len(labels) == len(speed.ROWS) + 1 and labels[-1].startswith("baseline")
    for row, cells in zip(speed.ROWS, rows[1:], strict=False):
        assert cells[0].startswith(row.label.split("{")[0])
        assert float(cells[1]) > 0 and cells[3].endswith("x")
        if row.time_target is not None:
            assert f"time <= {row.time_target:.2f}x: " in cells[-1]
            assert cells[-1].split(": ")[1].split(";")[0] in ("met", "MISSED")
        measured = row.name in speed.QUICK_MEMORY_ROWS
        assert (cells[5] != "-") == measured
    assert "peak < LayerGradCam's: " in done.stdout
    assert "Machine: " in done.stdout


def test_compare_quick_run_has_every_method_and_column(tmp_path):
    from benchmarks import compare

    out = tmp_path / "table.md"
    run_script("benchmarks/compare.py", "--quick", "--out", str(out))
    rows = table_rows(out.read_text(), "method")
    assert rows[0] == [column.header for column in compare.COLUMNS]
    assert [row[0] for row in rows[1:]] == list(compare.METHODS)
    assert all(len(row) == len(compare.COLUMNS) and all(row) for row in rows[1:])
    assert "--model shapes" in out.read_text()


def test_compare_model_head_needs_the_head_model(monkeypatch, capsys):
    from benchmarks import compare

    monkeypatch.setattr(compare, "load_shapes_head_model", None)
    with pytest.raises(SystemExit):
        compare.parse_args(["--model", "shapes-head"])
    assert "needs captum_fam.zoo.load_shapes_head_model" in capsys.readouterr().err
    args, config = compare.parse_args(["--model", "shapes", "--quick"])
    assert config.model == "shapes" and config.n == compare.QUICK["n"]


def test_compare_quick_run_on_the_head_model():
    from benchmarks import compare

    if compare.load_shapes_head_model is None:
        pytest.skip("this captum_fam has no captum_fam.zoo.load_shapes_head_model")
    done = run_script("benchmarks/compare.py", "--quick", "--markdown", "--model", "shapes-head")
    rows = table_rows(done.stdout, "method")
    assert [row[0] for row in rows[1:]] == list(compare.METHODS)
    assert "cascade: head, block4" in done.stdout


def test_compare_quick_run_on_the_common_mode_model():
    from benchmarks import compare

    done = run_script("benchmarks/compare.py", "--quick", "--markdown", "--model", "common-mode")
    rows = table_rows(done.stdout, "method")
    assert [row[0] for row in rows[1:]] == list(compare.METHODS)
    assert "cascade: trunk.block4, trunk.block3" in done.stdout
    agnostic = {row[0]: float(row[-2]) for row in rows[1:]}
    assert agnostic["activation"] == 1.0  # the reference-agnostic map itself
    assert agnostic["FAM (layer, reference)"] > agnostic["FAM (output, reference)"]


def test_retrieval_quick_run_prints_both_rows():
    pytest.importorskip("torchvision")
    from benchmarks import retrieval

    done = run_script("benchmarks/retrieval.py", "--quick", "--markdown")
    rows = table_rows(done.stdout, "row")
    assert rows[0] == [column.header for column in retrieval.COLUMNS]
    assert rows[1][0] == "query forward (inference)" and rows[1][3] == "1.00x"
    assert rows[2][0].startswith("explain_retrieval") and rows[2][3].endswith("x")
    assert f"<= {retrieval.TIME_TARGET}x: " in rows[2][4]


def test_text_quick_run_prints_every_row_and_the_target():
    pytest.importorskip("transformers")
    from benchmarks import text

    done = run_script("benchmarks/text.py", "--quick", "--markdown")
    rows = table_rows(done.stdout, "row")
    assert rows[0] == [column.header for column in text.COLUMNS]
    assert [row[0] for row in rows[1:]] == [*text.LABELS.values(), "baseline: model + inputs only"]
    limit, fam = rows[1], rows[2]
    assert limit[3] == "1.00x" and fam[3].endswith("x")
    assert f"time <= {text.FAM_TIME_TARGET:.2f}x: " in fam[6]
    assert limit[4] != "-" and fam[4] != "-" and rows[3][4] == "-"  # --quick: fewer children
