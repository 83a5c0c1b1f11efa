"""zasync's benchmark: one command, every figure of issue 3 measured in the
same run on this machine.

    /tmp/zv/bin/python bench/run.py            # about 7 minutes
    /tmp/zv/bin/python bench/run.py --peers    # and the peers on Redis beside it

Sections (see README.md): the storage's raw commit rate; end to end and
latency by the peers' protocol, in-process on FileStorage and over ZEO with
one and two worker processes, with every job checked to have run exactly
once; put and claim rates with a small and a large backlog; the peers.
Progress goes to stderr, the summary to stdout, every figure to
results/<timestamp>/bench.json.
"""

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import e2e  # noqa: E402
import peers  # noqa: E402
import scale  # noqa: E402
import storage  # noqa: E402
from common import REPO, Interrupted, Scratch, install_signal_handlers, say  # noqa: E402
from summary import report  # noqa: E402

SECTIONS = ("raw", "e2e", "scale", "peers")


def _env_int(name, default):
    raw = os.environ.get(name, "")
    return int(raw.replace("_", "").replace(",", "")) if raw else default


def _keyword(text):
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="zasync's benchmark: storage limit, end to end and latency by "
                    "the peers' protocol, integrity, scale, and the peers side by side.",
        epilog="Environment: ZASYNC_BENCH_SCALE_JOBS (default of --scale-jobs), "
               "BENCH_JOBS, PEERS_DIR, PEERS_VENV, BENCH_SYSTEMS (default of --peer-systems).")
    p.add_argument("--peers", action="store_true",
                   help="also run the peers' run_all.sh (zasync's bench_zasync.py included) "
                        "and compare; without it the ratios use the peers' reference figures")
    p.add_argument("--peer-systems", default=os.environ.get("BENCH_SYSTEMS", peers.DEFAULT_SYSTEMS),
                   help="systems for run_all.sh (default: %(default)s)")
    p.add_argument("--redis-modes", default=",".join(peers.REDIS_MODES), metavar="LIST",
                   help="Redis modes the peers run on, one run_all.sh each, of "
                        + ",".join(peers.REDIS_MODES) + " (default: both, printed side by "
                        "side: 'durable' fsyncs every write as ZODB does)")
    p.add_argument("--peer-repeats", type=int, default=1, metavar="N",
                   help="runs of run_all.sh per Redis mode, the modes interleaved; "
                        "each figure is the median of the runs (default %(default)s; "
                        "issue 19's ratios want >= 3)")
    p.add_argument("--peer-timeout", type=int, default=300, metavar="SECONDS",
                   help="run_all.sh's time budget per system, BENCH_TIMEOUT_S, unless set "
                        "(default %(default)s; theirs is 120)")
    p.add_argument("--only", default=",".join(SECTIONS[:3]), metavar="LIST",
                   help="sections to run, of " + ",".join(SECTIONS)
                        + " (default: raw,e2e,scale; --peers adds peers)")
    p.add_argument("--jobs", type=int, default=_env_int("BENCH_JOBS", 5000),
                   help="no-op jobs per end-to-end run (default %(default)s, the peers' N)")
    p.add_argument("--lat-jobs", type=int, default=200, help="stamp jobs (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads per worker (default %(default)s)")
    p.add_argument("--modes", default=",".join(e2e.MODES),
                   help="end-to-end modes, of " + ",".join(e2e.MODES) + " (default: all)")
    p.add_argument("--e2e-repeats", type=int, default=2,
                   help="runs of each end-to-end mode, medians reported (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3,
                   help="runs of each raw commit measurement (default %(default)s)")
    p.add_argument("--raw-commits", type=int, default=1000,
                   help="commits per raw measurement (default %(default)s)")
    p.add_argument("--scale-jobs", type=int,
                   default=_env_int("ZASYNC_BENCH_SCALE_JOBS", 1_000_000),
                   help="pending jobs of the large backlog (default %(default)s, "
                        "or $ZASYNC_BENCH_SCALE_JOBS)")
    p.add_argument("--scale-small", type=int, default=1000,
                   help="pending jobs of the small backlog (default %(default)s)")
    p.add_argument("--scale-ops", type=int, default=1000,
                   help="puts and claims per scale round (default %(default)s)")
    p.add_argument("--scale-rounds", type=int, default=5,
                   help="scale rounds, medians reported (default %(default)s)")
    p.add_argument("--scale-batch", type=int, default=10_000,
                   help="puts per transaction while building a backlog (default %(default)s)")
    p.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for each `zasync worker` process (repeatable), "
                        "e.g. --worker-arg=--prefetch=8")
    p.add_argument("--dispatcher-kw", action="append", default=[], type=_keyword,
                   metavar="KEY=VALUE",
                   help="extra keyword for the in-process zasync.Dispatcher (repeatable)")
    p.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                   help="before each section, wait until the 1-minute load average is "
                        "below LOAD (at most --wait-max seconds): for a shared machine")
    p.add_argument("--wait-max", type=float, default=300.0, metavar="SECONDS",
                   help="longest wait of --wait-load per section (default %(default)s)")
    p.add_argument("--results-dir", default=None,
                   help="where bench.json and the peers' files go "
                        "(default bench/results/<timestamp>)")
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch folder (databases, worker logs)")
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.peers and "peers" not in only:
        only.append("peers")
    unknown = set(only) - set(SECTIONS)
    if unknown:
        p.error(f"--only: unknown sections {sorted(unknown)}; expected {SECTIONS}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(modes) - set(e2e.MODES):
        p.error(f"--modes: expected some of {e2e.MODES}")
    for name in ("jobs", "lat_jobs", "threads", "e2e_repeats", "peer_repeats", "repeats",
                 "raw_commits", "scale_jobs", "scale_small", "scale_ops", "scale_rounds",
                 "scale_batch"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected 1 or more")
    redis_modes = [m.strip() for m in args.redis_modes.split(",") if m.strip()]
    if not redis_modes or set(redis_modes) - set(peers.REDIS_MODES):
        p.error(f"--redis-modes: {args.redis_modes!r}: expected some of "
                f"{','.join(peers.REDIS_MODES)}")
    args.redis_modes = redis_modes
    args.sections = only
    args.modes = modes
    args.dispatcher_kw = dict(args.dispatcher_kw)
    args.lat_interval_ms = 20.0
    args.idle_s = 2.0
    if args.results_dir is None:
        args.results_dir = os.path.join(HERE, "results", time.strftime("%Y%m%d-%H%M%S"))
    args.results_dir = os.path.abspath(args.results_dir)
    return args


def source_state():
    """The commit measured, and whether src/ differs from it."""
    def git(*argv):
        done = subprocess.run(["git", "-C", REPO, *argv], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "src")
    return head + ("+uncommitted changes in src/" if dirty else "")


def wait_for_quiet(cfg, section, facts):
    """With --wait-load, wait until others' processes calm down."""
    if cfg.wait_load is None:
        return
    started = time.monotonic()
    while os.getloadavg()[0] >= cfg.wait_load and time.monotonic() - started < cfg.wait_max:
        time.sleep(5)
    waited = time.monotonic() - started
    load = os.getloadavg()[0]
    facts.setdefault("waits", {})[section] = {"waited_s": round(waited), "load_1min": load}
    if waited >= 5:
        say(f"waited {waited:.0f} s for the load to drop below {cfg.wait_load}: now {load:.1f}")


def main(argv=None):
    cfg = parse_args(argv)
    install_signal_handlers()
    os.makedirs(cfg.results_dir, exist_ok=True)
    started = time.time()
    facts = {
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": f"{os.cpu_count()} cpus, {platform.platform()}, Python {platform.python_version()}",
        "source": source_state(),
        "argv": sys.argv[1:],
        "config": {k: v for k, v in vars(cfg).items()},
        "loadavg_at_start": os.getloadavg(),
    }
    say(f"zasync bench: {facts['host']}; source {facts['source']}; "
        f"sections {','.join(cfg.sections)}")
    results = {}
    scratch = Scratch(keep=cfg.keep)
    status = 0
    try:
        if "raw" in cfg.sections:
            wait_for_quiet(cfg, "raw", facts)
            results["raw"] = storage.measure(scratch, cfg)
        if "e2e" in cfg.sections:
            wait_for_quiet(cfg, "e2e", facts)
            results["e2e"] = {}
            e2e.measure(scratch, cfg, results["e2e"])
        if "scale" in cfg.sections:
            wait_for_quiet(cfg, "scale", facts)
            results["scale"] = scale.measure(scratch, cfg)
        if "peers" in cfg.sections:
            wait_for_quiet(cfg, "peers", facts)
            results["peers"], results["peers_output"] = peers.run(scratch, cfg)
    except (KeyboardInterrupt, Interrupted) as error:
        say(f"interrupted ({type(error).__name__}: {error}); stopping what was started")
        results["error"] = f"interrupted: {type(error).__name__} {error}"
        status = 130
    except Exception as error:
        import traceback
        traceback.print_exc()
        say(f"failed: {type(error).__name__}: {error}")
        results["error"] = f"{type(error).__name__}: {error}"
        status = 1
    finally:
        scratch.close()
    facts["wall_s"] = time.time() - started
    facts["loadavg_at_end"] = os.getloadavg()
    with open(os.path.join(cfg.results_dir, "bench.json"), "w") as f:
        json.dump({"facts": facts, "results": results}, f, indent=2, default=str)
        f.write("\n")
    print(report(facts, results, cfg), flush=True)
    say(f"all figures: {os.path.join(cfg.results_dir, 'bench.json')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
