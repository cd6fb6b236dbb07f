"""The tutorial notebooks: committed with their figures, and runnable offline without errors.

Each notebook is executed in a fresh kernel with ``tutorials/run.py``'s own function, so the test
runs them exactly as ``make tutorials`` does (without saving).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tutorials_run", TUTORIALS / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ids(path: Path) -> str:
    return path.stem


def test_every_tutorial_is_there() -> None:
    stems = [path.stem for path in NOTEBOOKS]
    for prefix in ("01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_", "09_"):
        assert any(stem.startswith(prefix) for stem in stems), f"no tutorial {prefix}*: {stems}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_committed_with_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    assert notebook.cells[0].cell_type == "markdown", f"{path.name} must open with its intro"
    unexecuted = [i for i, cell in enumerate(code) if cell.execution_count is None]
    assert not unexecuted, f"{path.name}: code cells {unexecuted} were not executed"
    outputs = [output for cell in code for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert not errors, f"{path.name} was committed with an error: {errors[0].get('ename')}"
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert images, f"{path.name} has no image/png output: run `make tutorials` and commit"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_runs_without_error(path: Path) -> None:
    runner = _load_runner()
    notebook, _ = runner.execute_notebook(path, save=False)
    produced = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert produced, f"{path.name} drew no figure when executed"
