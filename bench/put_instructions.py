"""What one put costs in instructions, counted by valgrind's callgrind:
the same from one run to the next, whatever the load of the machine, where
CPU times (cost.py) swing by a fifth on this shared machine.

    .venv/bin/python bench/put_instructions.py            # zasync and the floor
    .venv/bin/python bench/put_instructions.py --puts 500

Each side runs twice under callgrind, in a fresh FileStorage: N and 3N
puts, one per transaction, after 10 to warm up; instructions per put =
(the second count - the first) / 2N, so that starting Python, importing
and opening the database cancel out.  Counted in user space only: the
fsync and the rest of the kernel's work are not.  zasync's side puts
``zasync.cli.examples.noop(i)`` with no worker running; the floor's adds
a minimal call object to one of 256 mappings (storage.py's `floor_puts`).
About a minute per side on a loaded 2-core machine.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.realpath(__file__))
REPO = os.path.dirname(HERE)


def _puts(side, count):
    """Run in the child: `count` puts of `side` (after 10 to warm up)."""
    sys.path.insert(0, HERE)
    import transaction
    import zasync
    folder = tempfile.mkdtemp(prefix="zasync-put-instructions-")
    try:
        db = zasync.open_db(os.path.join(folder, "Data.fs"))
        if side == "floor":
            import storage
            storage.floor_puts(db, 10)
            storage.floor_puts(db, count)
        else:
            from zasync.cli.examples import noop
            zasync.install(db)
            tm = transaction.TransactionManager()
            conn = db.open(transaction_manager=tm)
            queue = zasync.get_queue(conn)
            for i in range(10 + count):
                queue.put(noop, i)
                tm.commit()
            conn.close()
        db.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _counted(side, count):
    """Instructions callgrind counts for a child running `count` puts."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.join(REPO, "src")] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, os.path.realpath(__file__), "--child", side, str(count)],
        env=env, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"callgrind of {count} {side} puts failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--puts", type=int, default=500,
                   help="N: runs of N and 3N puts per side (default %(default)s)")
    p.add_argument("--only", choices=("zasync", "floor"), default=None, help="one side only")
    p.add_argument("--child", nargs=2, metavar=("SIDE", "COUNT"), help=argparse.SUPPRESS)
    cfg = p.parse_args(argv)
    if cfg.child:
        _puts(cfg.child[0], int(cfg.child[1]))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if cfg.puts < 1:
        p.error(f"--puts {cfg.puts}: expected 1 or more")
    found = {}
    for side in ("zasync", "floor"):
        if cfg.only in (None, side):
            few, many = _counted(side, cfg.puts), _counted(side, 3 * cfg.puts)
            found[side] = (many - few) / (2 * cfg.puts)
            print(f"# {side}: {found[side]:,.0f} instructions per put", file=sys.stderr, flush=True)
    print(f"user-space instructions per put (callgrind), {cfg.puts} and {3 * cfg.puts} puts "
          f"on FileStorage, one per transaction")
    for side, per_put in found.items():
        print(f"  {side + ' put':14} {per_put:12,.0f}")
    if len(found) == 2:
        print(f"  put: zasync's instructions / the floor's: {found['zasync'] / found['floor']:.2f}")


if __name__ == "__main__":
    main()
