"""zasync inside a host application: the Zope component architecture
(`component`), the start-up subscribers that ZCML registers
(`subscriber`), running jobs in a Zope site (`zopeapp`) and in a Pyramid
application (`pyramid`).  The ZCML files stay beside ``zasync/__init__.py``
so that ``<include package="zasync" file="..."/>`` keeps its meaning.
"""
