"""Execute the tutorial notebooks, offline, and optionally save their outputs.

Usage::

    python tutorials/run.py                      # run every tutorials/*.ipynb
    python tutorials/run.py 01_getting_started   # run the named ones (with or without .ipynb)
    python tutorials/run.py --save               # write the executed outputs back (make tutorials)

Each notebook runs in a fresh ``python3`` kernel (the interpreter running this script), with
``tutorials/`` as its working directory, a 600 s limit per cell, and one intra-op thread unless
``OMP_NUM_THREADS`` says otherwise (the models are small, and on a shared machine more threads
only wait for each other). The wall time of every notebook is printed; the exit status is
non-zero if any cell raised.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "python3"
CELL_TIMEOUT = 600
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

__all__ = ["CELL_TIMEOUT", "HERE", "KERNEL_NAME", "execute_notebook", "find_notebooks", "main"]


def find_notebooks(names: Sequence[str] = ()) -> list[Path]:
    """The notebooks of ``tutorials/``, sorted, or those named (stem or file name)."""
    available = sorted(HERE.glob("*.ipynb"))
    if not names:
        return available
    by_name = {path.stem: path for path in available}
    chosen = []
    for name in names:
        stem = Path(name).name.removesuffix(".ipynb")
        if stem not in by_name:
            known = ", ".join(by_name) or "none"
            raise SystemExit(f"run.py: no notebook named {name!r} in {HERE} (known: {known})")
        chosen.append(by_name[stem])
    return chosen


def execute_notebook(
    path: Path, save: bool = False, timeout: int = CELL_TIMEOUT
) -> tuple[nbformat.NotebookNode, float]:
    """Run one notebook top to bottom in a fresh kernel; return it executed and the wall time.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that fails. With
    ``save=True`` the executed notebook (outputs included) replaces the file.
    """
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        record_timing=False,  # no timestamps in the cells: reruns give the same file
        resources={"metadata": {"path": str(HERE)}},
    )
    # Figures as image/png outputs, whatever backend the caller's environment selects.
    env = dict(os.environ, MPLBACKEND=INLINE_BACKEND, PYTHONHASHSEED="0")
    env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    client.execute(env=env)
    elapsed = time.perf_counter() - start
    if save:
        nbformat.write(notebook, path)
    return notebook, elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook names (default: all)")
    parser.add_argument("--save", action="store_true", help="write the outputs into the files")
    parser.add_argument(
        "--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell (default: 600)"
    )
    args = parser.parse_args(argv)
    failures = []
    total = 0.0
    for path in find_notebooks(args.notebooks):
        try:
            _, elapsed = execute_notebook(path, save=args.save, timeout=args.timeout)
        except CellExecutionError as error:
            failures.append(path.name)
            print(f"FAILED  {path.name}\n{error}", file=sys.stderr, flush=True)
            continue
        total += elapsed
        saved = " (saved)" if args.save else ""
        print(f"{elapsed:7.1f} s  {path.name}{saved}", flush=True)
    print(f"{total:7.1f} s  in all")
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
