"""The documentation runs as written: every docstring example (doctest) and every Python block
of the README, in the numpy session (they do not depend on the backend under test)."""

import doctest
import importlib
import os
import pathlib
import pkgutil
import re

import pytest

import toolkit
from tests.conftest import selected_backends, unavailable_reason

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _in_the_numpy_session():
    if "numpy" not in selected_backends():
        pytest.skip("the documentation runs once, in the numpy session")


MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(toolkit.__path__, "toolkit."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(numpy_backend, name):
    _in_the_numpy_session()
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_public_api_has_docstrings_with_examples():
    _in_the_numpy_session()
    import inspect

    missing = []
    for name in toolkit.__all__:
        value = getattr(toolkit, name)
        public = (isinstance(value, type) and not issubclass(value, Exception)) or inspect.isfunction(value)
        if public and ">>>" not in (value.__doc__ or ""):
            missing.append(name)
    # Base classes document their examples on the concrete classes; History comes from fit; load
    # and store_torch_weights point to the example of their inverse.
    assert set(missing) <= {"Layer", "Loss", "Optimizer", "History", "load", "store_torch_weights"}, missing


PAGES = ["README.md", "CONTRIBUTING.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
CONTINUES = "# continues the previous block"
# What a block needs beyond the test environment's core, by the text that shows it.
OPTIONAL = {"import torch": "torch", "onnxruntime": "onnxruntime", "mpi4py": "mpi4py", '"numba"': "numba",
            '"jax"': "jax", "import jax": "jax"}


def _page_blocks(page: str) -> list[tuple[int, str, str | None]]:
    """(line, code, expected output or None) of each Python block of a page; the expected output is a
    ``text`` block that follows it directly (only blank lines or a sentence ending in ':' between)."""
    text = (ROOT / page).read_text()
    fences = list(re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M))
    blocks = []
    for index, fence in enumerate(fences):
        if fence.group(1) != "python":
            continue
        expected = None
        following = fences[index + 1] if index + 1 < len(fences) else None
        if following is not None and following.group(1) == "text":
            between = text[fence.end():following.start()].strip()
            if not between or (between.endswith(":") and "\n\n" not in between):
                expected = following.group(2)
        blocks.append((text[:fence.start()].count("\n") + 1, fence.group(2), expected))
    return blocks


BLOCKS = [(page, index) for page in PAGES if (ROOT / page).exists() for index in range(len(_page_blocks(page)))]
_NAMESPACES: dict[tuple[str, int], dict] = {}


def _needs(code: str) -> str | None:
    import importlib.util

    for marker, module in OPTIONAL.items():
        if marker in code:
            if module in ("numba", "jax", "torch") and unavailable_reason(module):
                return f"needs the {module} backend: {unavailable_reason(module)}"
            if importlib.util.find_spec(module) is None:
                return f"needs {module}, which is not installed here"
    return None


def _run_block(page: str, index: int, folder: pathlib.Path) -> dict:
    """Run block ``index`` of ``page`` (after the blocks it continues), in ``folder``; returns its namespace."""
    import contextlib
    import io

    if (page, index) in _NAMESPACES:
        return _NAMESPACES[(page, index)]
    line, code, expected = _page_blocks(page)[index]
    reason = _needs(code)
    if reason:
        pytest.skip(f"{page}, block at line {line}: {reason}")
    if code.startswith(CONTINUES):
        assert index > 0, f"{page}, block at line {line} continues nothing"
        namespace = dict(_run_block(page, index - 1, folder))
    else:
        namespace = {"__name__": "__docs__"}
    output, here = io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(output):
            exec(compile(code, f"{page}, block at line {line}", "exec"), namespace)  # noqa: S102 - our own docs
    finally:
        os.chdir(here)
    if expected is not None:
        assert output.getvalue().strip() == expected.strip(), f"{page}, block at line {line} printed:\n{output.getvalue()}"
    _NAMESPACES[(page, index)] = namespace
    return namespace


@pytest.mark.parametrize("page,index", BLOCKS, ids=[f"{page}:{_page_blocks(page)[i][0]}" for page, i in BLOCKS])
def test_every_python_block_of_the_docs_runs_as_written(numpy_backend, tmp_path_factory, monkeypatch, page, index):
    """Each block runs alone, or after the previous block of its page when it starts with
    ``# continues the previous block``; a ``text`` block right after it is the output it must print."""
    _in_the_numpy_session()
    monkeypatch.setenv("MPLBACKEND", "Agg")
    folder = tmp_path_factory.getbasetemp() / "docs" / page.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    _run_block(page, index, folder)


def test_the_readme_is_short_and_every_guide_is_linked():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000, f"README.md is {len(readme.encode())} bytes; guides belong in docs/"
    for page in PAGES:
        if page.startswith("docs/") and page not in ("docs/index.md", "docs/api.md"):
            assert f"({page})" in readme, f"README.md does not link {page}"
