"""Sphinx settings: the guides (Markdown, through MyST) and the API reference (autodoc, from the
docstrings) in one static site. ``nox -s docs`` builds it with warnings as errors, so a broken
internal link or a malformed docstring fails the build."""

project = "toolkit"
author = "the toolkit authors"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # "[text](training.md#callbacks)" links resolve, and are checked
napoleon_google_docstring, napoleon_numpy_docstring = True, False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
html_theme = "alabaster"
html_title = "toolkit"
suppress_warnings = ["myst.strikethrough"]
