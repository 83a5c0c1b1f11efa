"""`zasync schedule`, `schedules`, `unschedule` and `put --key`, through
click's CliRunner against a FileStorage (closed by the test while a
command has it open: a FileStorage is opened by one at a time)."""

import json

import pytest
from click.testing import CliRunner

import zasync
from zasync.cli.cli import main
from zasync.testing import installed_db


@pytest.fixture
def path(tmp_path):
    found = str(tmp_path / "Data.fs")
    installed_db(found, queues=("", "mail")).close()
    return found


def run(*args):
    # A table is as wide as rich finds the terminal; without a width given
    # it asks the real fds 0-2, which are a pipe under pytest-xdist (80
    # columns: the names are folded) and the developer's terminal otherwise.
    return CliRunner(env={"COLUMNS": "200"}).invoke(main, list(args),
                                                    catch_exceptions=False)


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def reading(path, do):
    db = zasync.open_db(path)
    try:
        with db.transaction() as conn:
            return do(conn)
    finally:
        db.close()


@pytest.mark.parametrize("command", ["schedule", "schedules", "unschedule",
                                     "resume-schedule"])
def test_help_explains_each_command_with_examples(command):
    result = ok(command, "--help")
    assert "Examples:" in result.output and f"zasync {command}" in result.output


def test_schedule_list_and_unschedule(path):
    result = ok("schedule", "zasync.cli.examples:add", "2", "3", "--every", "5m",
                "--name", "adder", "--db", path)
    assert result.stdout.strip() == "adder"
    ok("schedule", "zasync.cli.examples:add", "1", "1", "--cron", "0 6 * * 1",
       "--queue", "mail", "--catch-up", "all", "--db", path)
    made = reading(path, lambda conn: (
        zasync.get_queue(conn).schedules["adder"].args,
        zasync.get_queue(conn).schedules["adder"].every.total_seconds(),
        list(zasync.get_queue(conn, "mail").schedules)))
    assert made == ((2, 3), 300.0, ["zasync.cli.examples.add"])

    table = ok("schedules", "--db", path).output
    assert "adder" in table and "every 5 min" in table and "cron 0 6 * * 1" in table
    listed = json.loads(ok("schedules", "--db", path, "--json").output)["schedules"]
    assert [(s["queue"], s["name"], s["catch_up"]) for s in listed] == [
        ("", "adder", "one"), ("mail", "zasync.cli.examples.add", "all")]
    only = json.loads(ok("schedules", "--db", path, "--queue", "mail", "--json").output)
    assert len(only["schedules"]) == 1

    reply = json.loads(ok("unschedule", "adder", "--db", path, "--json").output)
    assert reply == {"task_id": "adder", "result": "ok",
                     "message": "schedule 'adder' removed; its pending run is cancelled"}
    assert reading(path, lambda conn: list(zasync.get_queue(conn).schedules)) == []
    result = run("unschedule", "adder", "--db", path, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["result"] == "fail"
    result = run("unschedule", "adder", "--db", path)
    assert result.exit_code == 1 and "no schedule 'adder'" in result.output
    ok("unschedule", "zasync.cli.examples.add", "--queue", "mail", "--db", path)


def test_resume_schedule_puts_the_next_run_of_a_stalled_schedule(path):
    ok("schedule", "zasync.cli.examples:add", "2", "3", "--every", "1h", "--name", "hourly",
       "--db", path)
    reply = json.loads(ok("resume-schedule", "hourly", "--db", path, "--json").output)
    assert reply["result"] == "ok" and "not stalled; nothing done" in reply["message"]

    def stall(conn):
        # as if the callback that puts the next run had failed for good
        job = zasync.get_queue(conn).schedules["hourly"].next_job
        job._callbacks = ()
        job()
        return job.id
    db = zasync.open_db(path)
    try:
        with db.transaction() as conn:
            stalled_id = stall(conn)
    finally:
        db.close()
    assert "stalled" in ok("schedules", "--db", path).output
    done = ok("resume-schedule", "hourly", "--db", path).output
    assert "schedule 'hourly' resumed: its next run is job" in done
    next_job = reading(path, lambda conn: (
        zasync.get_queue(conn).schedules["hourly"].next_job.id,
        zasync.get_queue(conn).schedules["hourly"].stalled))
    assert next_job[0] != stalled_id and next_job[1] is False
    result = run("resume-schedule", "nightly", "--db", path, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["result"] == "fail"


@pytest.mark.parametrize("args, message", [
    (["--every", "soon"], "'soon': expected a period"),
    (["--every", "5m", "--cron", "* * * * *"], "exactly one of every"),
    ([], "exactly one of every"),
    (["--cron", "every monday"], "cron='every monday'"),
    (["--every", "5m", "--catch-up", "some"], "'some' is not one of"),
    (["--every", "5m", "--queue", "nope"], "no queue named 'nope'"),
])
def test_bad_input_exits_2_naming_it(path, args, message):
    result = run("schedule", "zasync.cli.examples:add", "1", "2", "--db", path, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert reading(path, lambda conn: len(zasync.get_queue(conn).schedules)) == 0


def test_a_taken_name_is_refused(path):
    ok("schedule", "zasync.cli.examples:add", "1", "2", "--every", "1h", "--db", path)
    result = run("schedule", "zasync.cli.examples:add", "1", "2", "--every", "1h", "--db", path)
    assert result.exit_code == 2 and "already has a schedule" in result.output


def test_put_with_a_key_puts_once(path):
    first = ok("put", "zasync.cli.examples:add", "1", "2", "--key", "k", "--db", path)
    second = ok("put", "zasync.cli.examples:add", "3", "4", "--key", "k", "--db", path)
    assert first.stdout == second.stdout
    assert "already holds key 'k'" in second.stderr
    job_id = first.stdout.strip()
    data = json.loads(ok("job", job_id, "--db", path, "--json").output)
    assert data["key"] == "k" and data["args"] == ["1", "2"]
    assert "key       k" in ok("job", job_id, "--db", path).output
    assert reading(path, lambda conn: len(zasync.get_queue(conn))) == 1
    result = run("put", "zasync.cli.examples:add", "1", "2", "--key", "", "--db", path)
    assert result.exit_code == 2 and "key=''" in result.output


def test_schedule_takes_keyword_arguments_as_put_does(path):
    ok("schedule", "zasync.cli.examples:send_report", "Q4", "parts=3", "pause=0",
       "--every", "1h", "--name", "report", "--db", path)
    made = reading(path, lambda conn: (
        zasync.get_queue(conn).schedules["report"].args,
        zasync.get_queue(conn).schedules["report"].kwargs))
    assert made == (("Q4",), {"parts": 3, "pause": 0})
    # A keyword named like an option of schedule cannot reach the callable.
    result = run("schedule", "zasync.cli.examples:send_report", "Q4", "name=x",
                 "--every", "1h", "--db", path)
    assert result.exit_code == 2
    assert "'name=x'" in result.output and "--name" in result.output
