"""The repository's layout as the wheel sees it: every package folder is listed in
pyproject.toml, and the top-level integrations/ folder is importable as rcsb_captum.integrations
(in this checkout's install, editable or not)."""

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed():
    cfg = _setuptools()
    dirs = {"rcsb_captum.integrations": ROOT / "integrations"}
    for init in (ROOT / "rcsb_captum").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        dirs[".".join(rel.parts)] = init.parent
    assert sorted(cfg["packages"]) == sorted(dirs)
    assert cfg["package-dir"] == {"rcsb_captum.integrations": "integrations"}
    assert not (ROOT / "rcsb_captum" / "integrations").exists()


def test_integrations_import_from_the_top_level_folder():
    import rcsb_captum.integrations as integrations
    from rcsb_captum.integrations import grounded_sam, quantus  # noqa: F401

    assert Path(integrations.__file__).resolve().parent == ROOT / "integrations"
