"""What every benchmark script shares: machine facts, seeding and threads, timing, peak memory
and tables, each defined once here so that all tables measure the same way.

- **Timing** (:func:`time_interleaved`): rows are named calls without arguments. Each row runs
  once as a warm-up; then every repeat calls every row once, the starting row rotating from
  repeat to repeat (:func:`rotation`), so that load drifts on a shared machine hit all rows
  alike. A row reports its median and its spread (fastest and slowest repeat). Ratios are only
  ever taken between medians of one such run, never across runs or processes.
- **Peak memory** (:func:`measure_peak_memory`): the peak resident set size (Linux ``VmHWM``,
  see :func:`peak_rss_mib`) of a fresh child process that builds the workload and runs one row
  once, minus that of a baseline child that only builds the workload. The child is the calling
  script itself, started as it was started (:func:`launcher`) with
  ``--peak-memory-row=NAME``; it runs the row and prints one JSON line (:func:`report_peak`).
- **Tables** (:class:`Table`): columns are declared once (:class:`Column`), rows give one cell
  per column by key, and the table renders as aligned plain text or as Markdown.

The scripts run as ``python benchmarks/NAME.py`` and import this module as ``harness``; tests
import them as ``benchmarks.NAME`` (the repository root is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

PEAK_ROW_OPTION = "--peak-memory-row"
"""The option that turns a benchmark script into a peak-memory child for one row."""

BASELINE = "baseline"
"""The peak-memory child that builds the workload and runs nothing."""


# --- machine, seeding, threads -------------------------------------------------------------------


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    """Seeds Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state is what libraries draw from)
    torch.manual_seed(seed)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int | None = None) -> int:
    """Sets torch's intra-op threads (default: the available cores) and returns the number."""
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive number; got {threads}")
    threads = threads or available_cores()
    torch.set_num_threads(threads)
    return threads


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_facts(packages: Sequence[str] = ("torch", "captum")) -> str:
    """One line: CPU, cores, torch threads, load average, Python and package versions."""
    load = (
        ", ".join(f"{value:.1f}" for value in os.getloadavg())
        if hasattr(os, "getloadavg")
        else "n/a"
    )
    versions = ", ".join(f"{name} {_version(name)}" for name in packages)
    return (
        f"Machine: {_cpu_name()}, {os.cpu_count()} cores ({available_cores()} available), "
        f"torch threads: {torch.get_num_threads()}, load average {load} (1, 5, 15 min); "
        f"Python {platform.python_version()}, {versions}"
    )


def verdict(met: bool) -> str:
    """How a target reads in a table."""
    return "met" if met else "MISSED"


# --- timing --------------------------------------------------------------------------------------


def median_and_spread(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of a non-empty sequence."""
    if len(values) == 0:
        raise ValueError("values must hold at least one measurement; got none")
    return statistics.median(values), min(values), max(values)


@dataclass(frozen=True)
class Timing:
    """The wall times of one row, in milliseconds, one per timed repeat."""

    milliseconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return median_and_spread(self.milliseconds)[0]

    @property
    def spread(self) -> tuple[float, float]:
        """Fastest and slowest repeat."""
        _, low, high = median_and_spread(self.milliseconds)
        return low, high

    def spread_text(self, digits: int = 0) -> str:
        low, high = self.spread
        return f"{low:.{digits}f}-{high:.{digits}f}"


def rotation(names: Sequence[str], repeat: int) -> list[str]:
    """The order of the rows in repeat ``repeat``: the starting row moves by one each time."""
    if not names:
        return []
    shift = repeat % len(names)
    return [*names[shift:], *names[:shift]]


def time_interleaved(
    rows: Mapping[str, Callable[[], object]],
    repeats: int,
    *,
    repeats_of: Mapping[str, int] | None = None,
    warmups: Mapping[str, Callable[[], object]] | None = None,
    progress: Callable[[str], None] | None = log,
) -> dict[str, Timing]:
    """Times named rows in this process, round-robin, and returns each row's :class:`Timing`.

    Args:
        rows: Each row as a call without arguments.
        repeats: Timed calls of each row.
        repeats_of: Fewer repeats for costly rows (timed in the first ones only).
        warmups: A cheaper warm-up call for a row (for example a method on fewer steps, with
            the timed call's shapes); other rows warm up with their own call.
        progress: Where a line per repeat goes (stderr by default; None for silence).
    """
    names = list(rows)
    if not names:
        raise ValueError("rows must name at least one call; got none")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1; got {repeats}")
    repeats_of = dict(repeats_of or {})
    warmups = dict(warmups or {})
    for option, mapping in (("repeats_of", repeats_of), ("warmups", warmups)):
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise ValueError(f"{option} names rows that do not exist: {unknown}")
    if any(count < 1 for count in repeats_of.values()):
        raise ValueError(f"repeats_of must give each row at least 1 repeat; got {repeats_of}")

    for name in names:
        if progress:
            progress(f"warm-up: {name}")
        warmups.get(name, rows[name])()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        order = [n for n in rotation(names, repeat) if repeat < repeats_of.get(n, repeats)]
        for name in order:
            gc.collect()  # no collection of earlier rows' garbage inside a timed call
            start = time.perf_counter()
            rows[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
        if progress:
            timed = ", ".join(f"{name} {times[name][-1]:.0f} ms" for name in order)
            progress(f"repeat {repeat + 1}/{repeats}: {timed}")
    return {name: Timing(tuple(values)) for name, values in times.items()}


# --- peak memory ---------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """This process's peak resident set size (MiB) since its ``execve``.

    Linux's ``VmHWM`` belongs to the address space, which ``execve`` replaces. ``ru_maxrss``
    survives ``execve`` and so includes the spawning parent's size (checked: a child of a
    parent holding 800 MiB reports 811 MiB of ``ru_maxrss`` and 11 MiB of ``VmHWM``); it is
    only the fallback where ``/proc`` is missing.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes or KiB


def cuda_peak_mib() -> float:
    """The most CUDA memory this process's tensors held (``torch.cuda.max_memory_allocated``)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def report_peak(
    row: str, run: Callable[[], object] | None, peak: Callable[[], float] = peak_rss_mib
) -> None:
    """The child's side: run the row once (nothing for the baseline), print one JSON line
    (the peak resident set size, or another ``peak`` such as :func:`cuda_peak_mib`)."""
    if run is not None:
        run()
    print(json.dumps({"row": row, "peak_rss_mib": peak()}), flush=True)


def parse_peak(stdout: str, row: str) -> float:
    """The peak (MiB) from a child's stdout, whose last line :func:`report_peak` printed."""
    lines = stdout.strip().splitlines()
    try:
        record = json.loads(lines[-1])
        reported, peak = record["row"], float(record["peak_rss_mib"])
    except (IndexError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"the peak-memory child for {row!r} printed no JSON line with row and "
            f"peak_rss_mib; its stdout ended with {stdout[-200:]!r}"
        ) from None
    if reported != row:
        raise ValueError(f"the peak-memory child for {row!r} reported row {reported!r}")
    return peak


def launcher() -> list[str]:
    """How this process's main module was started: ``python -m NAME`` or ``python PATH``.

    A child started the same way imports exactly what its parent imported.
    """
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name not in (None, "__main__"):
        return [sys.executable, "-m", spec.name.removesuffix(".__main__")]
    path = getattr(main, "__file__", None)
    if path is None:
        raise RuntimeError("peak memory needs a script or module as __main__, not a REPL")
    return [sys.executable, str(Path(path).resolve())]


def child_command(command: Sequence[str], row: str, args: Sequence[str]) -> list[str]:
    """The command line of the peak-memory child for ``row``."""
    return [*command, f"{PEAK_ROW_OPTION}={row}", *args]


@dataclass(frozen=True)
class PeakMemory:
    """Peak RSS (MiB) of each row's child and of the baseline child."""

    peaks: dict[str, float] = field(default_factory=dict)

    @property
    def baseline(self) -> float:
        return self.peaks[BASELINE]

    def above_baseline(self, row: str) -> float:
        return self.peaks[row] - self.baseline


def measure_peak_memory(
    rows: Sequence[str],
    args: Sequence[str] = (),
    *,
    command: Sequence[str] | None = None,
    workers: int = 1,
    progress: Callable[[str], None] | None = log,
) -> PeakMemory:
    """Runs one fresh child per row, plus the baseline child, and collects their peaks.

    Args:
        rows: The rows to measure (the baseline is added).
        args: Options that make each child build exactly the parent's workload.
        command: How to start the script (default: :func:`launcher`).
        workers: Children running at the same time. Each child's peak is its own address
            space's, so concurrency changes the wall time only.
        progress: Where a line per child goes.

    Raises:
        RuntimeError: A child failed; the message holds the end of its stderr.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1; got {workers}")
    command = list(command) if command is not None else launcher()
    names = [BASELINE, *(row for row in rows if row != BASELINE)]

    def run(row: str) -> float:
        if progress:
            progress(f"peak memory: {row}")
        done = subprocess.run(
            child_command(command, row, args), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"the peak-memory child for {row!r} exited with {done.returncode}:\n"
                f"{done.stderr[-3000:]}"
            )
        return parse_peak(done.stdout, row)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        peaks = dict(zip(names, pool.map(run, names), strict=True))
    return PeakMemory(peaks)


# --- tables --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column: the key rows use, its header, and its alignment (``"left"``/``"right"``)."""

    key: str
    header: str
    align: str = "left"

    def __post_init__(self) -> None:
        if self.align not in ("left", "right"):
            raise ValueError(f"align must be 'left' or 'right'; got {self.align!r}")


def speed_parser(
    description: str,
    quick: Mapping[str, object],
    repeats: object,
    rows: Sequence[str],
    memory_workers: int,
) -> argparse.ArgumentParser:
    """The options every speed-and-memory script shares: ``--quick`` (the ``quick`` settings),
    ``--markdown``, ``--repeats``, ``--threads``, ``--seed``, ``--memory-workers`` and the
    hidden option that makes a process a peak-memory child of one of ``rows``; the script adds
    its own sizes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {dict(quick)}")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {repeats})")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: all cores; 1 with --quick)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-workers",
        type=int,
        default=memory_workers,
        help=f"peak-memory children at a time ({memory_workers})",
    )
    parser.add_argument(PEAK_ROW_OPTION, choices=(*rows, BASELINE), help=argparse.SUPPRESS)
    return parser


def speed_columns(
    ratios: Sequence[Column], peak_header: str = "peak RSS MiB"
) -> tuple[Column, ...]:
    """The columns of a speed-and-memory table: the row, its median and spread, the script's
    ``ratios``, the peak memory (``peak_header``, e.g. CUDA memory) and the part above the
    baseline process, and the target's verdict."""
    return (
        Column("row", "row"),
        Column("median", "median ms", "right"),
        Column("spread", "spread ms", "right"),
        *ratios,
        Column("peak", peak_header, "right"),
        Column("above", "above baseline MiB", "right"),
        Column("target", "target"),
    )


class Table:
    """A table whose columns are declared once; rows give one cell per column key.

    Examples::

        >>> table = Table([Column("row", "row"), Column("ms", "median ms", "right")])
        >>> table.add(row="forward", ms="12")
        >>> print(table.markdown())
        | row | median ms |
        | --- | ---: |
        | forward | 12 |
    """

    def __init__(self, columns: Sequence[Column]) -> None:
        keys = [column.key for column in columns]
        if not keys:
            raise ValueError("columns must declare at least one column; got none")
        if len(set(keys)) != len(keys):
            raise ValueError(f"column keys must be unique; got {keys}")
        self.columns = tuple(columns)
        self.rows: list[tuple[str, ...]] = []

    @property
    def headers(self) -> list[str]:
        return [column.header for column in self.columns]

    def add(self, **cells: object) -> None:
        """Adds a row: one cell per column key, each turned into text with ``str``."""
        keys = [column.key for column in self.columns]
        missing = [key for key in keys if key not in cells]
        unknown = [key for key in cells if key not in keys]
        if missing or unknown:
            raise ValueError(
                f"a row needs exactly the keys {keys}; missing {missing}, unknown {unknown}"
            )
        row = tuple(str(cells[key]) for key in keys)
        if any("\n" in cell for cell in row):
            raise ValueError(f"table cells are single lines; got {row}")
        self.rows.append(row)

    def text(self) -> str:
        """Aligned plain text: the header, a rule, the rows."""
        lines = [tuple(self.headers), *self.rows]
        widths = [max(len(line[i]) for line in lines) for i in range(len(self.columns))]

        def render(cells: Sequence[str]) -> str:
            return "  ".join(
                cell.rjust(width) if column.align == "right" else cell.ljust(width)
                for cell, width, column in zip(cells, widths, self.columns, strict=True)
            ).rstrip()

        header = render(self.headers)
        return "\n".join([header, "-" * len(header), *(render(row) for row in self.rows)])

    def markdown(self) -> str:
        """A GitHub-flavoured Markdown table (``|`` inside cells escaped)."""
        rule = ["---:" if column.align == "right" else "---" for column in self.columns]

        def render(cells: Sequence[str]) -> str:
            return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

        return "\n".join(
            [render(self.headers), "| " + " | ".join(rule) + " |", *map(render, self.rows)]
        )

    def render(self, markdown: bool) -> str:
        return self.markdown() if markdown else self.text()
