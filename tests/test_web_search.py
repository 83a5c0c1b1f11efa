"""Finding jobs in the web view and the JSON API: the job-id box, search
in the words of the callable, arguments, result and failure across the
whole history, filters answered from the queues' indexes, every job
reachable by paging; and the history's word index, written as jobs are
filed, without conflicting with jobs completing at the same time."""

import datetime

import transaction
import webtest

import zasync
from zasync.web import make_app
from zasync.web.survey import Filters, list_jobs
from zasync.queue.words import job_words

import web_jobs
from test_web import TOKEN, put, wait_completed, wait_until

LATER = datetime.timedelta(hours=1)


def ids_found(app, **query):
    return [job["id"] for job in app.get("/api/jobs", query).json["jobs"]]


def run_jobs(db, *calls):
    """Put each (function, *args), run them all with a dispatcher, wait
    until each is filed into the history; return their ids."""
    ids = [put(db, function, *args) for function, *args in calls]
    with zasync.Dispatcher(db, threads=2, poll_interval=0.05):
        for job_id in ids:
            wait_completed(db, job_id)
        # filed (and indexed) by a later claim of the keeper
        wait_until(lambda: filed(db) >= len(ids), what="the jobs being filed")
    return ids


def filed(db):
    with db.transaction() as conn:
        return len(zasync.get_queue(conn).history._by_end)


def test_job_words_come_from_callable_arguments_result_and_failure(db):
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        job = queue.put(zasync.Job(web_jobs.add, "Kiwi-7", b="x"))
        assert {"web_jobs", "add", "kiwi", "7", "b", "x"} <= set(job_words(job))


def test_search_finds_words_of_arguments_results_and_failures(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    kiwi, mango, other = run_jobs(
        db, (web_jobs.add, "kiwi ", "fruit"), (web_jobs.fail, "mango exploded"),
        (web_jobs.add, 1, 2))
    assert ids_found(app, q="kiwi") == [kiwi]                 # an argument
    assert ids_found(app, q="KIWI FRUIT") == [kiwi]           # two words, any case
    assert ids_found(app, q="mango") == [mango]               # a failure's message
    assert ids_found(app, q="valueerror") == [mango]          # its type
    assert ids_found(app, q="3") == [other]                   # a result
    assert ids_found(app, q="kiwi mango") == []               # every word must match
    assert ids_found(app, q="mang*") == [mango]               # a prefix
    assert ids_found(app, q="mang") == []                     # else whole words
    assert set(ids_found(app, q="web_jobs")) == {kiwi, mango, other}
    # the page has the box and lists what it found
    page = app.get("/jobs", {"q": "mango"})
    assert page.html.select_one("input[name=q]")["value"] == "mango"
    assert [row["data-job"] for row in page.html.select("tr[data-job]")] == [mango]


def test_search_finds_pending_jobs_by_their_callable(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    later = datetime.datetime.now(datetime.timezone.utc) + LATER
    waiting = put(db, web_jobs.crawl, 3, 0.0, begin_after=later)
    assert ids_found(app, q="crawl") == [waiting]
    assert ids_found(app, q="crawl", status="pending") == [waiting]
    assert ids_found(app, q="crawl", status="completed") == []


def test_a_search_without_words_is_400(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    reply = app.get("/api/jobs", {"q": "*!?"}, status=400).json
    assert "q='*!?'" in reply["message"] and "expected words" in reply["message"]


def test_the_job_id_box_goes_to_the_job(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    job_id = put(db, web_jobs.add, 1, 2)
    page = app.get("/")
    box = page.html.select_one("form.goto")
    assert box["action"] == "/go" and box.select_one("input[name=id]") is not None
    reply = app.get("/go", {"id": f"  {job_id} "}, status=303)
    assert reply.location.endswith(f"/jobs/{job_id}")
    assert reply.follow().html.select_one("h1") is not None


def test_the_job_id_box_says_when_there_is_no_such_job(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    page = app.get("/go", {"id": "0123-nothing"}, status=404)
    assert "No job has the id '0123-nothing'" in page.text
    page = app.get("/go", {"id": "<script>x</script>"}, status=404)
    assert "<script>x" not in page.text and "&lt;script&gt;x" in page.text
    assert app.get("/go", {"id": ""}, status=303).location.endswith("/jobs")


def test_every_job_is_reachable_and_the_last_page_is_linked(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    ids = [put(db, web_jobs.add, number, 0) for number in range(12)]
    oldest_first = ids
    first = app.get("/jobs", {"per_page": 5})
    assert "page 1 of 3 · 12 jobs" in first.html.select_one("h1").text
    links = {a.text: a["href"] for a in first.html.select("nav.pager a")}
    assert links["Oldest »"] == "/jobs?page=3&per_page=5"
    last = app.get(links["Oldest »"])
    assert [row["data-job"] for row in last.html.select("tr[data-job]")] == \
        oldest_first[:2][::-1]
    assert app.get("/api/jobs", {"per_page": 5, "page": 3}).json["total"] == 12
    past = app.get("/api/jobs", {"per_page": 5, "page": 401}).json
    assert (past["jobs"], past["has_next"], past["total"]) == ([], False, 12)


def test_paging_is_answered_from_the_indexes_not_a_scan(db):
    # Before, a listing read at most SCAN_LIMIT jobs: past them a page was
    # empty.  The indexes answer without reading jobs: a scan limit of 3
    # does not hide the oldest of 12.
    ids = [put(db, web_jobs.add, number, 0) for number in range(12)]
    with db.transaction() as conn:
        container = zasync.get_queues(conn)
        for query, expected in (({"page": "4", "per_page": "3"}, ids[2::-1]),
                                ({"status": "pending", "page": "4", "per_page": "3"},
                                 ids[2::-1]),
                                ({"callable": "web_jobs.ADD", "page": "4", "per_page": "3"},
                                 ids[2::-1])):
            page, has_next, complete, total = list_jobs(
                container, Filters(query, container.keys()), scan_limit=3)
            assert [job.id for job in page] == expected, query
            assert (has_next, complete, total) == (False, True, 12)


def test_status_and_callable_filters_across_pending_and_completed(db):
    app = webtest.TestApp(make_app(db, token=TOKEN))
    done, = run_jobs(db, (web_jobs.add, 2, 2))
    later = datetime.datetime.now(datetime.timezone.utc) + LATER
    waiting = put(db, web_jobs.add, 5, 5, begin_after=later)
    mail = put(db, web_jobs.crawl, 1, 0.0, queue="mail")
    assert ids_found(app, status="pending") == [mail, waiting]
    assert ids_found(app, status="pending", queue="mail") == [mail]
    assert ids_found(app, status="completed") == [done]
    assert ids_found(app, state="success") == [done]
    assert ids_found(app, state="failure") == []
    assert ids_found(app, callable="add") == [waiting, done]
    assert ids_found(app, callable="crawl") == [mail]
    assert ids_found(app) == [mail, waiting, done]


def test_retried_and_pruned_jobs_leave_the_word_index(db):
    failed, = run_jobs(db, (web_jobs.fail, "durian"))
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        assert queue.history.ids_with_word("durian") == {failed}
        queue.retry(queue.get(failed))
        assert queue.history.ids_with_word("durian") == set()
        assert queue.history.ids_by_callable("fail") == set()


def test_filing_and_indexing_merge_with_jobs_completing_at_once(db):
    """The keeper's claim files and indexes completed jobs while other
    jobs complete in other transactions (here cancelled while pending,
    which files them in the history as a worker's finishing job does):
    every transaction commits, none conflicts, and a later claim indexes
    the rest."""
    later = datetime.datetime.now(datetime.timezone.utc) + LATER
    first = [put(db, web_jobs.fail, f"apple{n}", begin_after=later) for n in range(20)]
    second = [put(db, web_jobs.fail, f"pear{n}", begin_after=later) for n in range(20)]
    managers = [transaction.TransactionManager() for _ in range(3)]
    conns = [db.open(transaction_manager=tm) for tm in managers]
    try:
        # the first batch completes and is waiting to be filed
        tm, conn = managers[0], conns[0]
        tm.begin()
        queue = zasync.get_queue(conn)
        for job_id in first:
            queue.get(job_id).cancel()
        tm.commit()
        # now, at once: the keeper files (and indexes) it, while two
        # other transactions complete the second batch
        for tm in managers:
            tm.begin()
        keeper = zasync.get_queue(conns[0])
        keeper.claim("keeper", count=0)
        assert len(keeper.history._by_end) == 20
        for tm, conn, part in ((managers[1], conns[1], second[:10]),
                               (managers[2], conns[2], second[10:])):
            queue = zasync.get_queue(conn)
            for job_id in part:
                queue.get(job_id).cancel()
        for tm in managers:
            tm.commit()     # raises ConflictError if anything did not merge
        tm = managers[0]
        tm.begin()
        queue = zasync.get_queue(conns[0])
        assert queue.history.ids_with_word("apple7") == {first[7]}
        assert queue.history.ids_with_word("pear3") == set()     # not filed yet
        queue.claim("keeper", count=0)
        tm.commit()
        tm.begin()
        history = zasync.get_queue(conns[0]).history
        assert history.ids_with_word("pear3") == {second[3]}
        assert history.ids_with_word("cancelled") == set(first) | set(second)
        assert history.ids_with_word("pear", prefix=True) == {
            job_id for job_id in second}
        assert history.ids_by_callable("web_jobs.fail") == set(first) | set(second)
        tm.abort()
    finally:
        for tm, conn in zip(managers, conns):
            tm.abort()
            conn.close()


def test_the_web_command_takes_a_cache_size(tmp_path):
    from click.testing import CliRunner
    from zasync.cli import main
    result = CliRunner().invoke(main, ["web", "--db", str(tmp_path / "Data.fs"),
                                       "--cache-size", "5"])
    assert result.exit_code == 2
    assert "--cache-size" in result.output and "5 is not in the range" in result.output
    assert "--cache-size" in CliRunner().invoke(main, ["web", "--help"]).output


def test_ids_and_long_numbers_are_not_indexed_and_the_search_says_so(db):
    # Each such word is a key of its own in the index, rewriting a bucket
    # of its own at every filing; the job-id box finds a job by its id.
    app = webtest.TestApp(make_app(db, token=TOKEN))
    kiwi, = run_jobs(db, (web_jobs.add, "kiwi 0123456789abcdef 20261203 4711", " x"))
    with db.transaction() as conn:
        history = zasync.get_queue(conn).history
        assert history.ids_with_word("kiwi") == {kiwi}
        assert history.ids_with_word("4711") == {kiwi}              # short numbers are
        assert history.ids_with_word("20261203") == set()           # 8 digits are not
        assert history.ids_with_word("0123456789abcdef") == set()
        assert history.ids_with_word(kiwi) == set()
    # a search with such a word looks for the others
    assert ids_found(app, q="kiwi 0123456789abcdef") == [kiwi]
    reply = app.get("/api/jobs", {"q": "20261203"}, status=400).json
    assert "q='20261203'" in reply["message"] and "job-id box" in reply["message"]


def test_a_completion_does_not_rewrite_the_words_of_jobs_completed_before_it(db):
    """Every completion rewrites the history's set of jobs completed since
    the last filing; the words of those jobs are not in it, so that it stays
    small however wordy the jobs."""
    later = datetime.datetime.now(datetime.timezone.utc) + LATER
    wordy = " ".join(f"word{n}" for n in range(100))
    ids = [put(db, web_jobs.fail, f"n{n} {wordy}", begin_after=later) for n in range(20)]
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        for job_id in ids:
            queue.get(job_id).cancel()       # completes them, waiting to be filed
    with db.transaction() as conn:
        done = zasync.get_queue(conn).history._done
        assert len(done) == 20
        size = len(conn._storage.load(done._p_oid)[0])
        # each note: its end, whether it failed, a reference; not 100 words
        assert size < 20 * 150, size
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        queue.claim("keeper", count=0)
    with db.transaction() as conn:
        history = zasync.get_queue(conn).history
        # (words of the arguments' short text, `IJob.args_summary`: the
        # first 200 characters)
        assert history.ids_with_word("word10") == set(ids)
        assert history.ids_with_word("n7") == {ids[7]}


def test_jobs_noted_with_their_words_before_are_filed_and_found(db):
    # A history written by an earlier version noted each job's words
    # themselves: (end, failed, words, name).
    later = datetime.datetime.now(datetime.timezone.utc) + LATER
    job_id = put(db, web_jobs.fail, "quince", begin_after=later)
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        job = queue.get(job_id)
        job.cancel()
        done = queue.history._done
        note = (job._ended_at_us, True, ("quince", "0123456789abcdef"), job.callable_name)
        done.add(job, note=note)
    with db.transaction() as conn:
        zasync.get_queue(conn).claim("keeper", count=0)
    with db.transaction() as conn:
        history = zasync.get_queue(conn).history
        assert history.ids_with_word("quince") == {job_id}
        assert history.ids_with_word("0123456789abcdef") == set()
        assert history.ids_by_callable("fail") == {job_id}


def test_an_index_made_before_forgets_the_ids_it_held_of_a_retried_job(db):
    # Indexes made before ids were left out (plain OOTreeSets) hold them;
    # taking a job out of the history takes them out too.
    from BTrees.OOBTree import OOTreeSet
    job_id, = cancelled_jobs(db, "quince 0123456789abcdef", 1)
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        queue.claim("keeper", count=0)
        history = queue.history
        history._words = OOTreeSet(history._words)
        history._words.add(("0123456789abcdef", job_id))
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        queue.retry(queue.get(job_id))
        assert list(queue.history._words) == []


def cancelled_jobs(db, text, count):
    """Ids of `count` jobs of `web_jobs.fail` (argument `text` with its
    number), put for later and cancelled: completed, waiting to be filed."""
    later = datetime.datetime.now(datetime.timezone.utc) + LATER
    ids = [put(db, web_jobs.fail, text.format(n), begin_after=later) for n in range(count)]
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        for job_id in ids:
            queue.get(job_id).cancel()
    return ids


def test_completed_jobs_not_filed_yet_are_found_by_callable_and_words(db):
    # No claim has filed them into the history's indexes (no worker runs
    # after them): they are found all the same, by their callable's name
    # and by the words of their failure.
    ids = cancelled_jobs(db, "quokka {}", 2)
    with db.transaction() as conn:
        assert len(zasync.get_queue(conn).history._done) == 2
    app = webtest.TestApp(make_app(db))
    for query in ({"callable": "web_jobs.fail"}, {"q": "quokka"},
                  {"q": "cancelled"}, {"status": "completed", "q": "quok*"}):
        found = app.get("/api/jobs", query).json
        assert sorted(job["id"] for job in found["jobs"]) == sorted(ids), query


def test_the_words_of_a_callables_name_are_found_through_the_names_index(db):
    # Every job of one callable shares its name's words: kept as (word, id)
    # keys they were most of what a filing wrote, a bucket rewritten per
    # word and filing.  The index of names finds them instead.
    ids = cancelled_jobs(db, "fig{}", 3)
    with db.transaction() as conn:
        zasync.get_queue(conn).claim("keeper", count=0)
    with db.transaction() as conn:
        history = zasync.get_queue(conn).history
        kept = {word for word, _ in history._words}
        assert "fig1" in kept and not kept & {"web_jobs", "fail"}
        assert history.ids_with_word("web_jobs") == set(ids)
        assert history.ids_with_word("fail") == set(ids)
        assert history.ids_with_word("fai", prefix=True) == set(ids)
        assert history.ids_with_word("fai") == set()
        assert history.ids_with_word("fig1") == {ids[1]}
    app = webtest.TestApp(make_app(db, token=TOKEN))
    assert sorted(ids_found(app, q="fail fig2")) == [ids[2]]
    assert sorted(ids_found(app, q="web_jobs")) == sorted(ids)


def test_a_job_filed_with_its_names_words_is_found_and_forgotten(db):
    # An index filed by an earlier version holds the words of the name too.
    job_id, = cancelled_jobs(db, "plum", 1)
    with db.transaction() as conn:
        history = zasync.get_queue(conn).history
        zasync.get_queue(conn).claim("keeper", count=0)
        for word in ("web_jobs", "fail"):
            history._words.add((word, job_id))
    with db.transaction() as conn:
        queue = zasync.get_queue(conn)
        assert queue.history.ids_with_word("fail") == {job_id}
        queue.retry(queue.get(job_id))
        assert list(queue.history._words) == []
        assert queue.history.ids_with_word("fail") == set()
