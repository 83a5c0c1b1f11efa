"""Start-up: ZCML (zope.configuration) and the one-call set-up install the
queues and start a dispatcher when the database opens; the multi-database
policy keeps the jobs in an 'async' database beside the main one."""

import pytest
import zope.component.testing
import zope.event
from zope.configuration import xmlconfig
from zope.configuration.exceptions import ConfigurationError as ZCMLError
from zope.processlifetime import DatabaseOpenedWithRoot

import zasync
from zasync.integration import subscriber
from zasync import testing
from zasync.queue.database import ROOT_KEY
from zasync.interfaces import ConfigurationError, IQueue, IQueues

import zope_jobs

TIMEOUT = 30


@pytest.fixture(autouse=True)
def placeless():
    zope.component.testing.setUp()
    yield
    subscriber.stop(timeout=TIMEOUT)
    zope.component.testing.tearDown()


@pytest.fixture
def fresh_db(tmp_path):
    """A database without zasync, as an application opens it."""
    db = zasync.open_db(str(tmp_path / "Data.fs"))
    yield db
    db.close()


@pytest.fixture
def multidb(tmp_path):
    db = testing.open_multidb(tmp_path)
    yield db
    subscriber.stop(timeout=TIMEOUT)
    testing.close_multidb(db)


def _zcml(body):
    return xmlconfig.string(f"""
        <configure xmlns="http://namespaces.zope.org/zope"
                   xmlns:zasync="http://namespaces.zope.org/zasync">
          <include package="zasync" />
          {body}
        </configure>""")


def test_configure_zcml_registers_the_adapters_and_starts_nothing(db):
    _zcml("")
    with db.transaction() as conn:
        assert IQueue(conn) is zasync.get_queue(conn)
        assert IQueues(conn.root()[ROOT_KEY]) is zasync.get_queues(conn)
    zope.event.notify(DatabaseOpenedWithRoot(db))
    assert subscriber.dispatchers() == []


def test_the_basic_policy_installs_and_starts_a_dispatcher_when_the_database_opens(fresh_db):
    _zcml('<include package="zasync" file="basic_dispatcher_policy.zcml" />')
    assert subscriber.dispatchers() == []
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    dispatcher = subscriber.get_dispatcher(fresh_db)
    assert dispatcher is not None and dispatcher.running
    assert subscriber.dispatchers() == [dispatcher]
    assert dispatcher.db is fresh_db
    assert dispatcher.queue_names == ("",)
    with fresh_db.transaction() as conn:
        job = IQueue(conn).put(zasync.Job(zope_jobs.add, 20, 22))
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 42
    # the database opening again in this process starts no second one
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    assert subscriber.dispatchers() == [dispatcher]
    assert subscriber.stop(fresh_db)
    assert not dispatcher.running
    assert subscriber.get_dispatcher(fresh_db) is None


def test_the_multidb_policy_keeps_jobs_in_the_async_database(multidb):
    _zcml('<include package="zasync" file="multidb_dispatcher_policy.zcml" />')
    zope.event.notify(DatabaseOpenedWithRoot(multidb))
    dispatcher = subscriber.get_dispatcher(multidb, "async")
    assert dispatcher.db is multidb.databases["async"]
    with multidb.transaction() as conn:
        assert ROOT_KEY not in conn.root()                        # main: no queues
        assert ROOT_KEY in conn.get_connection("async").root()    # async: queues
        document = conn.root()["doc"] = zope_jobs.Document()
    with multidb.transaction() as conn:
        document = conn.root()["doc"]
        queue = IQueue(document)                 # found in 'async'
        job = queue.put(zasync.Job(zope_jobs.note, document, "from a job"))
        assert job._p_jar.db().database_name == "async"
        assert document._p_jar.db().database_name == "main"
    done = zasync.wait_for(job, timeout=TIMEOUT)
    assert done.failure is None, done.failure.traceback
    assert done.result == 1
    assert done._p_jar.db().database_name == "async"
    with multidb.transaction() as conn:
        # the job's transaction wrote the main database's object
        assert conn.root()["doc"].log == ["from a job"]
        assert conn.root()["doc"]._p_jar.db().database_name == "main"


def test_the_directive_configures_threads_queues_database_and_id(multidb):
    _zcml("""<zasync:dispatcher threads="3" queues="'' mail" database="async"
                                id="web-1" poll_interval="0.05" />""")
    zope.event.notify(DatabaseOpenedWithRoot(multidb))
    dispatcher = subscriber.get_dispatcher(multidb, "async")
    assert dispatcher.id == "web-1"
    assert dispatcher.queue_names == ("", "mail")
    assert [agent.size for agent in dispatcher.agents] == [3]
    assert dispatcher.poll_interval == 0.05
    with multidb.transaction() as conn:
        assert zasync.get_queues(conn.get_connection("async")).keys() == ["", "mail"]


def test_threads_0_installs_the_queues_and_starts_no_dispatcher(fresh_db):
    _zcml('<zasync:dispatcher threads="0" queues="reports" />')
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    assert subscriber.dispatchers() == []
    with fresh_db.transaction() as conn:
        assert zasync.get_queues(conn).keys() == ["reports"]


def test_a_bad_directive_is_refused_when_the_zcml_loads():
    with pytest.raises(ZCMLError):
        _zcml('<zasync:dispatcher threads="-1" />')
    with pytest.raises(ZCMLError):
        _zcml('<zasync:dispatcher workers="2" />')


def test_an_unknown_database_name_is_refused_when_the_database_opens(fresh_db):
    _zcml('<zasync:dispatcher database="async" />')
    with pytest.raises(ConfigurationError, match="has no such database"):
        zope.event.notify(DatabaseOpenedWithRoot(fresh_db))


def test_one_call_sets_up_an_application_without_zcml(multidb):
    dispatcher = subscriber.configure(multidb, threads=2, queues=("", "mail"),
                                      database_name="async", poll_interval=0.05)
    assert subscriber.configure(multidb, threads=2, database_name="async") is dispatcher
    assert dispatcher.running and dispatcher.queue_names == ("", "mail")
    with multidb.transaction() as conn:
        document = conn.root()["doc"] = zope_jobs.Document()
        # new in this transaction and referenced from both databases:
        # ZODB wants to be told which one keeps it
        conn.add(document)
        job = zasync.get_queue(conn.get_connection("async"), "mail").put(
            zasync.Job(zope_jobs.note, document, "mailed"))
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 1
    with multidb.transaction() as conn:
        assert conn.root()["doc"].log == ["mailed"]
    assert subscriber.stop(multidb, "async")
    assert not dispatcher.running


def test_configure_checks_its_arguments(fresh_db):
    with pytest.raises(ConfigurationError, match="threads"):
        subscriber.configure(fresh_db, threads=-1)
    with pytest.raises(ConfigurationError, match="database_name"):
        subscriber.configure(fresh_db, database_name=3)


@pytest.mark.parametrize("policy, database_name", [
    ("basic_dispatcher_policy.zcml", None),
    ("multidb_dispatcher_policy.zcml", "async"),
])
def test_a_policy_included_alone_registers_the_adapters_and_starts(multidb, policy,
                                                                   database_name):
    xmlconfig.string(f"""
        <configure xmlns="http://namespaces.zope.org/zope">
          <include package="zasync" file="{policy}" />
        </configure>""")
    zope.event.notify(DatabaseOpenedWithRoot(multidb))
    assert subscriber.get_dispatcher(multidb, database_name).running
    with multidb.transaction() as conn:
        job = IQueue(conn).put(zasync.Job(zope_jobs.add, 1, 2))
    assert zasync.wait_for(job, timeout=TIMEOUT).result == 3


# -- the dispatcher's id file ---------------------------------------------------

def _policy(policy="basic_dispatcher_policy.zcml"):
    xmlconfig.string(f"""
        <configure xmlns="http://namespaces.zope.org/zope">
          <include package="zasync" file="{policy}" />
        </configure>""")


def test_the_dispatcher_keeps_a_stable_id_beside_the_filestorage(fresh_db, tmp_path):
    _policy()
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    first = subscriber.get_dispatcher(fresh_db).id
    assert (tmp_path / "zasync-dispatcher.id").read_text().strip() == first
    assert subscriber.stop(fresh_db)
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    assert subscriber.get_dispatcher(fresh_db).id == first


def test_zope_s_client_home_holds_the_id_file(fresh_db, tmp_path, monkeypatch):
    var = tmp_path / "instance" / "var"
    monkeypatch.setenv("CLIENT_HOME", str(var))
    _policy()
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    dispatcher_id = subscriber.get_dispatcher(fresh_db).id
    assert (var / "zasync-dispatcher.id").read_text().strip() == dispatcher_id
    assert not (tmp_path / "zasync-dispatcher.id").exists()


def test_the_id_file_is_chosen_by_zcml_or_by_the_environment(multidb, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("CLIENT_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("ZASYNC_ID_FILE", str(tmp_path / "from-env.id"))
    (tmp_path / "from-zcml.id").write_text("web-7\n")
    _zcml(f'<zasync:dispatcher database="async" id_file="{tmp_path / "from-zcml.id"}" />')
    zope.event.notify(DatabaseOpenedWithRoot(multidb))
    assert subscriber.get_dispatcher(multidb, "async").id == "web-7"
    subscriber.stop()
    zope.component.testing.tearDown()
    zope.component.testing.setUp()
    _policy("multidb_dispatcher_policy.zcml")
    zope.event.notify(DatabaseOpenedWithRoot(multidb))
    from_env = subscriber.get_dispatcher(multidb, "async").id
    assert (tmp_path / "from-env.id").read_text().strip() == from_env


def test_a_bad_id_file_is_refused_naming_it(fresh_db, tmp_path):
    (tmp_path / "zasync-dispatcher.id").write_text("two words\n")
    _policy()
    with pytest.raises(ConfigurationError, match="zasync-dispatcher.id.*'two words'"):
        zope.event.notify(DatabaseOpenedWithRoot(fresh_db))


# -- scripts ----------------------------------------------------------------------

def test_zasync_dispatcher_off_installs_the_queues_and_starts_none(fresh_db, monkeypatch):
    monkeypatch.setenv("ZASYNC_DISPATCHER", "off")
    _policy()
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    assert subscriber.dispatchers() == []
    with fresh_db.transaction() as conn:
        assert zasync.get_queues(conn).keys() == [""]


def test_a_bad_zasync_dispatcher_value_is_refused_naming_it(fresh_db, monkeypatch):
    monkeypatch.setenv("ZASYNC_DISPATCHER", "maybe")
    _policy()
    with pytest.raises(ConfigurationError, match="ZASYNC_DISPATCHER='maybe'.*on, off or auto"):
        zope.event.notify(DatabaseOpenedWithRoot(fresh_db))


# -- a put where no configured dispatcher looks --------------------------------

def test_puts_go_to_the_served_database_and_elsewhere_are_warned_about(multidb, caplog):
    """Queues left in 'main' (an earlier basic policy) while the instance
    now serves 'async': the adapters find the served queues, and a put into
    the main ones is warned about, loudly, instead of waiting forever."""
    from zasync.interfaces import PENDING, UnservedQueueWarning
    zasync.install(multidb)                       # the old queues, in main
    _policy("multidb_dispatcher_policy.zcml")
    zope.event.notify(DatabaseOpenedWithRoot(multidb))
    with multidb.transaction() as conn:
        conn.root()["doc"] = zope_jobs.Document()
    with multidb.transaction() as conn:
        queue = IQueue(conn.root()["doc"])
        assert queue._p_jar.db().database_name == "async"
        served = queue.put(zasync.Job(zope_jobs.add, 1, 1))
    assert zasync.wait_for(served, timeout=TIMEOUT).result == 2
    with pytest.warns(UnservedQueueWarning, match="queue '' of database 'main'"):
        with multidb.transaction() as conn:
            stray = zasync.get_queue(conn).put(zasync.Job(zope_jobs.add, 2, 2))
            stray_id = stray.id
    assert [r for r in caplog.records if r.levelname == "WARNING"
            and "does not serve" in r.getMessage()]
    with multidb.transaction() as conn:
        assert zasync.get_queue(conn).get(stray_id).status == PENDING


# -- SIGTERM ----------------------------------------------------------------------

@pytest.fixture
def default_sigterm():
    import signal
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield signal
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_unwinds_the_process_while_the_subscriber_s_dispatcher_runs(
        fresh_db, default_sigterm):
    signal = default_sigterm
    _policy()
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    with pytest.raises(SystemExit):
        handler(signal.SIGTERM, None)
    # once used, a second SIGTERM ends the process at once
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert subscriber.stop(fresh_db)


def test_the_sigterm_handler_is_given_back_and_an_application_s_own_is_kept(
        fresh_db, tmp_path, default_sigterm):
    signal = default_sigterm
    _policy()
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert subscriber.stop(fresh_db)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def own(signum, frame):
        pass
    signal.signal(signal.SIGTERM, own)
    zope.event.notify(DatabaseOpenedWithRoot(fresh_db))
    assert subscriber.get_dispatcher(fresh_db).running
    assert signal.getsignal(signal.SIGTERM) is own


def test_an_id_file_that_cannot_be_used_is_refused_naming_it(fresh_db, tmp_path):
    import re
    (tmp_path / "a-file").write_text("")
    path = tmp_path / "a-file" / "zasync.id"
    with pytest.raises(ConfigurationError, match=f"{re.escape(str(path))}.*cannot"):
        subscriber.configure(fresh_db, id_file=str(path))
    assert subscriber.dispatchers() == []
