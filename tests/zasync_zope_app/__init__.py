"""A small Zope product for tests/test_zope_app.py: views that put jobs
as an application's views do, and the jobs they put.  The instance of the
test includes its configure.zcml; zasync itself is configured by the
instance's site.zcml and zope.conf as docs/zope.rst says."""
