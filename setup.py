"""zasync: deferred work for ZODB applications."""

import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


setup(
    name="zasync",
    version="0.1.0.dev0",
    description=(
        "Deferred work for ZODB applications: jobs are queued in the "
        "application's own transaction and run by workers"),
    long_description=read("README.rst"),
    long_description_content_type="text/x-rst",
    license="ZPL-2.1",
    python_requires=">=3.9",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"zasync": ["*.zcml", "web/templates/*.pt", "web/static/*"]},
    zip_safe=False,
    install_requires=[
        "ZODB >= 5.8",
        "ZEO >= 5.4",
        "transaction >= 3.0",
        "persistent >= 4.9",
        "BTrees >= 4.11",
        "zope.interface >= 5.0",
        "zope.component >= 5.0",
        "zope.event >= 4.5",
        # ZCML and the start-up subscribers (zasync.integration.subscriber)
        "zope.configuration >= 4.4",
        "zope.processlifetime >= 2.0",
        "zodburi >= 2.5",
        "click >= 8.0",
        "rich >= 12.0",
        # the web view: WSGI requests and responses, page templates that
        # escape by default, and the server of `zasync web`
        "WebOb >= 1.8",
        "Chameleon >= 4.0",
        "waitress >= 2.1",
        # cron expressions of recurring jobs (zasync.queue.schedule)
        "croniter >= 2.0",
    ],
    extras_require={
        "test": [
            "pytest >= 7.0",
            # a real Zope instance (mkwsgiinstance, runwsgi) for
            # tests/test_zope_app.py; [wsgi] brings the Paste its zope.ini uses
            "Zope[wsgi] >= 5.8",
            # the suite in parallel processes (README.rst: pytest -n auto)
            "pytest-xdist >= 3.0",
            # the layout's contracts of setup.cfg, checked by
            # tests/test_layout.py: layers and no import cycle
            "import-linter >= 2.1",
            # RelStorage on the local PostgreSQL (tests/test_relstorage.py);
            # the binary psycopg2 needs no compiler or libpq headers.
            "RelStorage >= 3.5",
            "psycopg2-binary >= 2.9",
            "zope.security >= 5.0",
            # the web view through WSGI, and end to end in Debian's chromium
            # (playwright drives it; it downloads no browser of its own)
            "WebTest >= 3.0",
            "playwright >= 1.40",
            # a real Pyramid application with the async database
            # (tests/test_pyramid.py, docs/pyramid.rst), served by waitress
            # (a dependency already)
            "pyramid >= 2.0",
            "pyramid_tm >= 2.5",
            "pyramid_zodbconn >= 0.8",
            # the documentation's build (tests/test_docs.py runs it with -W),
            # its API reference made from the interfaces too
            "Sphinx >= 7.0",
            "repoze.sphinx.autointerface >= 1.0",
        ],
        # running jobs as the principal who put them (zasync.job.context); in
        # Zope, in the site, as the user and with the URLs of the request
        # that put them (zasync.integration.zopeapp), and the web view inside Zope
        # (zope.zcml).  Zope 5 needs ZODB < 6.1.
        "zope": [
            "Zope[wsgi] >= 5.8",
            "zope.security >= 5.0",
        ],
        # zasync.integration.pyramid: the queues of a pyramid_zodbconn application
        "pyramid": [
            "pyramid >= 2.0",
            "pyramid_tm >= 2.5",
            "pyramid_zodbconn >= 0.8",
        ],
        "relstorage": [
            "RelStorage >= 3.5",
            "psycopg2-binary >= 2.9",
        ],
    },
    entry_points={
        "console_scripts": [
            "zasync = zasync.cli:main",
        ],
    },
    classifiers=[
        "Framework :: ZODB",
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Zope Public License",
    ],
)
