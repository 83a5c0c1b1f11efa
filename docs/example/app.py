"""The example application's content, its utility, its start-up
subscriber and the job it puts."""

import persistent
import persistent.mapping
import transaction
import zope.component
from zope.component.interfaces import ISite
from zope.component.persistentregistry import PersistentComponents
from zope.interface import Interface, implementer

import zasync.integration.component
import zasync.job.context
from zasync.interfaces import IQueue, IQueues

#: The name of the site in the main database's root.
SITE_NAME = "example"


class IWordCounter(Interface):
    """Counts words; registered in the site's local registry only, so code
    that uses it needs the site."""

    def count(text):
        """The number of words in `text`."""


@implementer(IWordCounter)
class WordCounter(persistent.Persistent):

    def count(self, text):
        return len(text.split())


@implementer(ISite)
class Site(persistent.mapping.PersistentMapping):
    """A folder of documents with a persistent local component registry
    (whose base is the global registry, where ZCML registers)."""

    def __init__(self):
        super().__init__()
        self._sm = PersistentComponents(
            SITE_NAME, bases=(zope.component.getGlobalSiteManager(),))

    def getSiteManager(self):
        return self._sm

    def setSiteManager(self, sm):
        self._sm = sm


class Document(persistent.Persistent):

    words = None          # counted by a job
    counted_by = None     # the user the job ran as

    def __init__(self, text):
        self.text = text


def bootstrap(event):
    """Subscriber of IDatabaseOpenedWithRoot: create the site if missing,
    register its word counter and zasync's queues in its registry.

    Subscribed after zasync's own, which has installed the queues (in the
    'async' database: the adapter IQueues(conn) finds them there)."""
    tm = transaction.TransactionManager()
    conn = event.database.open(transaction_manager=tm)
    try:
        with tm:
            root = conn.root()
            site = root.get(SITE_NAME)
            if site is None:
                site = root[SITE_NAME] = Site()
                site.getSiteManager().registerUtility(WordCounter(), IWordCounter)
            zasync.integration.component.register(site.getSiteManager(), IQueues(conn))
    finally:
        conn.close()


def add_document(site, name, text):
    """What a view does in a request, with the site set and the user
    authenticated: store a document and put a job that counts its words,
    in the request's context.  Return the job."""
    document = site[name] = Document(text)
    # The job, kept in the 'async' database, refers to this new document:
    # say which database stores it, or ZODB refuses to guess at commit.
    site._p_jar.add(document)
    queue = zope.component.getUtility(IQueue)
    return zasync.job.context.put(queue, count_words, document)


def count_words(document):
    """The job: needs the site (for the utility) and the user."""
    from zope.security.management import getInteraction
    counter = zope.component.getUtility(IWordCounter)
    document.words = counter.count(document.text)
    document.counted_by = getInteraction().participations[0].principal.id
    return document.words
