"""The documentation: generated pages equal the code, runnable examples run, links resolve."""

import re
from pathlib import Path

import pytest

from rcsb_captum.config import settings_page

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_settings_page_is_generated_from_the_config():
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == settings_page(), "regenerate: python -m rcsb_captum.config > docs/settings.md"


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
