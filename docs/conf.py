"""Sphinx configuration of zasync's documentation.

Build it with ``sphinx-build -W -b html docs docs/_build/html`` (after
``pip install -e '.[test]'``, which brings Sphinx); tests/test_docs.py runs
that build, so a warning fails the test suite.  The API reference
(reference.rst) is generated from the docstrings and from the interfaces
of ``zasync.interfaces`` (repoze.sphinx.autointerface).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The package is installed in development mode; the checkout's src/ keeps
# a build from another environment on the code it documents.
sys.path.insert(0, os.path.join(HERE, "..", "src"))

project = "zasync"
author = "the zasync authors"
copyright = "the zasync authors; ZPL-2.1"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "repoze.sphinx.autointerface",
]

root_doc = "index"
# docs/example/ is the example application (code, not pages), and the
# build's own output is not a source.
exclude_patterns = ["_build", "example"]

# `IQueue` in a docstring is a cross-reference where Sphinx finds the name,
# plain code where it does not.
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "none"

# No intersphinx inventories are fetched (the build runs offline).
intersphinx_mapping = {}

html_theme = "alabaster"
html_title = "zasync"


def _rst_links_to_pages(app, doctree, docname):
    """Point a link to another document's source (```api.rst <api.rst>`_``,
    as a page that plain docutils must also render writes it: Sphinx's
    :doc: role is unknown there) at that document's page.  A link to a
    document that does not exist is a warning, so ``-W`` fails on it."""
    from docutils import nodes
    from sphinx.util import logging

    for ref in doctree.findall(nodes.reference):
        target, hash_, anchor = ref.get("refuri", "").partition("#")
        if not target.endswith(".rst") or "://" in target:
            continue
        name = os.path.normpath(
            os.path.join(os.path.dirname(docname), target[:-len(".rst")]))
        if name not in app.env.found_docs:
            logging.getLogger(__name__).warning(
                "link to %s: no such document", target, location=(docname, ref.line))
            continue
        ref["refuri"] = app.builder.get_relative_uri(docname, name) + hash_ + anchor


def setup(app):
    app.connect("doctree-resolved", _rst_links_to_pages)
