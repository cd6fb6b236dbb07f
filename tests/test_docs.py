"""The documentation site builds with warnings as errors (what `make docs` runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

sphinx_build = pytest.importorskip("sphinx.cmd.build")

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    status = sphinx_build.build_main(
        ["-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), str(DOCS),
         str(tmp_path / "html")]
    )  # fmt: skip
    assert status == 0
    for page in ("index", "method", "search", "api", "cli", "faq", "model_card", "benchmarks"):
        assert (tmp_path / "html" / f"{page}.html").exists()
    notebooks = sorted((tmp_path / "html" / "tutorials" / "notebooks").glob("*.html"))
    assert len(notebooks) == len(list((DOCS.parent / "tutorials").glob("*.ipynb")))
    api = (tmp_path / "html" / "api.html").read_text()
    for name in (
        "FeatureActivationMap",
        "explain_prototypes",
        "explain_search",
        "TokenLayout",
        "pointing_game",
    ):
        assert name in api
