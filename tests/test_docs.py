"""The documentation builds: Sphinx with warnings as errors, the API
reference generated from the docstrings and interfaces, and the tutorial
readable by plain docutils too (as a repository's page renderer reads
it).  The examples in docs/*.rst run as doctests through pytest.ini."""

import os
import re
import subprocess
import sys

import docutils.core

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def test_sphinx_builds_the_docs_without_a_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(tmp_path / "doctrees"), DOCS, str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    html = tmp_path / "html"
    index = (html / "index.html").read_text(encoding="utf-8")
    for page in ("tutorial", "api", "reference", "zope", "deployment", "internals"):
        assert f'href="{page}.html"' in index, page      # in the toctree
    # The reference is made from the docstrings and the interfaces.
    reference = (html / "reference.html").read_text(encoding="utf-8")
    assert 'id="zasync.open_db"' in reference
    assert 'id="zasync.interfaces.IQueue.put"' in reference
    assert "are the queue\u2019s options" in " ".join(reference.split())   # IQueue.put
    # No page links to a source file instead of a page.
    for page in html.glob("*.html"):
        assert not re.search(r'href="[^"#]*\.rst[#"]', page.read_text(encoding="utf-8")), page


def test_the_tutorial_renders_in_plain_docutils():
    with open(os.path.join(DOCS, "tutorial.rst"), encoding="utf-8") as f:
        source = f.read()
    html = docutils.core.publish_string(
        source, writer_name="html",
        settings_overrides={"halt_level": 2, "report_level": 2, "output_encoding": "unicode"})
    assert "zasync tutorial" in html
