"""The documentation: generated pages equal the code, runnable examples run, links resolve (the
Sphinx build with warnings as errors runs in .ci/run)."""

import re
from pathlib import Path

import pytest

from rcsb_captum.config import settings_page

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_settings_page_is_generated_from_the_config():
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == settings_page(), "regenerate: python -m rcsb_captum.config > docs/settings.md"


def test_api_reference_is_generated_from_the_public_names():
    import importlib.util

    spec = importlib.util.spec_from_file_location("api_page", ROOT / "docs" / "api_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = (ROOT / "docs" / "api.rst").read_text()
    assert page == module.api_page(), "regenerate: python docs/api_page.py > docs/api.rst"
    documented = set(re.findall(r"^\.\. auto\w+:: (\S+)$", page, re.M))
    for name in importlib.import_module("rcsb_captum").__all__:  # the names users import first
        assert f"rcsb_captum.{name}" in documented


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_reference_outside_the_repository(page):
    text = page.read_text()
    for name in ("DESIGN.md", "RCSB_SPEC", "SEED_METHODS"):
        assert name not in text, f"{page.name} cites {name}, a file outside the repository"


def _exec_blocks():
    for page in PAGES:
        for i, block in enumerate(re.findall(r"```python exec\n(.*?)```", page.read_text(), re.S)):
            yield pytest.param(block, id=f"{page.name}-{i}")


@pytest.mark.parametrize("code", list(_exec_blocks()))
def test_runnable_examples_run(code):
    exec(compile(code, "<docs>", "exec"), {})
