"""Sphinx configuration for the captum-fam documentation (``make docs``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import captum_fam  # noqa: E402

project = "captum-fam"
author = "the captum-fam developers"
release = version = captum_fam.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# Notebooks are committed with their outputs and executed by the test suite, not here.
nb_execution_mode = "off"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # NamedTuple fields are documented by autodoc already
# Captum's base classes live outside this project: do not chase their cross-references.
nitpicky = False
suppress_warnings = ["myst.xref_missing", "mystnb.unknown_mime_type"]

html_theme = "furo"
html_title = f"captum-fam {release}"


def _copy_tutorials(app: object) -> None:
    """Render the notebooks of tutorials/ (the single copy) inside the docs tree."""
    target = HERE / "tutorials" / "notebooks"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


def setup(app: object) -> None:
    app.connect("builder-inited", _copy_tutorials)  # type: ignore[attr-defined]
