"""Every Python snippet of README.md and docs/*.md runs as written, so that none can rot.

The README's ```python blocks run in order in one namespace (each section builds on the
previous ones, as a reader would run them); each docs page's blocks run in a namespace of their
own. A block that cannot run as written (it names the reader's own model, say) is marked with
an HTML comment on the line before its fence, ``<!-- not run: why -->``; the comment is invisible
on GitHub and in the Sphinx site. Snippets run in a temporary working directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import pytest
from matplotlib import pyplot as plt

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").rglob("*.md"))
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.DOTALL)
NOT_RUN = re.compile(r"<!-- not run: [^>]+ -->")


def snippets(path: Path) -> list[tuple[int, str, bool]]:
    """(line, code, runnable) for each ```python block of a Markdown file."""
    text = path.read_text()
    found = []
    for match in BLOCK.finditer(text):
        line = text[: match.start("code")].count("\n") + 1
        found.append((line, match["code"], not NOT_RUN.fullmatch(match["before"].strip())))
    return found


def run(path: Path, blocks: list[tuple[int, str, bool]], namespace: dict) -> None:
    for line, code, runnable in blocks:
        if not runnable:
            continue
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        finally:
            plt.close("all")


@pytest.fixture(autouse=True)
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)


def test_readme_snippets_run_in_order() -> None:
    blocks = snippets(REPO / "README.md")
    assert sum(runnable for _, _, runnable in blocks) >= 3
    namespace: dict = {"__name__": "readme"}
    run(REPO / "README.md", blocks, namespace)
    # The last section's names were defined by the snippets themselves.
    assert namespace["why_not"].shape[:2] == (4, 1)
    assert namespace["hits"].indices.shape == (4, 10)


@pytest.mark.parametrize("path", [p for p in DOCS if snippets(p)], ids=lambda p: p.name)
def test_docs_snippets_run(path: Path) -> None:
    run(path, snippets(path), {"__name__": path.stem})


def test_marked_blocks_are_few_and_explained() -> None:
    marked = [
        (path.name, line)
        for path in [REPO / "README.md", *DOCS]
        for line, _, runnable in snippets(path)
        if not runnable
    ]
    assert len(marked) <= 3, marked
