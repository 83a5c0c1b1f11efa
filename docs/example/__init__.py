"""An example application that uses zasync the Zope way.

A site (a folder with its own persistent component registry) holds
documents; adding a document puts a job that counts its words with a
utility registered only in the site, as the user who added it.  The
application is configured by ZCML (configure.zcml): zasync's adapters, a
dispatcher started when the database opens, with the queues and the jobs in
an 'async' database beside the main one, and a subscriber of its own that
creates the site and registers the queues as utilities in it.

docs/zope.rst walks through it; test_app.py tests it.
"""
