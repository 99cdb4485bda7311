"""Sphinx configuration of the documentation: the markdown pages (MyST) and the API reference
generated from the docstrings (autodoc + napoleon). Built in CI with warnings as errors:

    sphinx-build -W --keep-going -b html docs build/docs
"""

project = "rcsb_captum"
author = "rcsb_captum developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "api_page.py"]
myst_heading_anchors = 3  # the pages link to each other's sections (page.md#a-heading)
# the pages also link to files of the repository that are not pages (benchmark tables,
# scripts); tests/test_docs.py checks that every such link resolves
suppress_warnings = ["myst.xref_missing"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"


def _constant_docs(app, what, name, obj, options, lines):
    r"""A public constant re-exported by a package (``rcsb_captum.autoencoder.PAPER_STEPS``)
    keeps the ``#:`` comment written where it is defined, never its type's docstring."""
    if what != "data":
        return
    import inspect
    import sys

    from sphinx.pycode import ModuleAnalyzer

    type_doc = inspect.getdoc(type(obj)) or ""
    if lines and "\n".join(lines).strip() != type_doc.strip():
        return  # a doc comment of its own
    attr = name.rsplit(".", 1)[1]
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("rcsb_captum") or getattr(module, attr, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except Exception:  # a module without source (extension, namespace)
            continue
        if ("", attr) in docs:
            lines[:] = list(docs[("", attr)])
            return
    lines[:] = []


def setup(app):
    app.connect("autodoc-process-docstring", _constant_docs)
