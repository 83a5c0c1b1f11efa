"""Running the peers' benchmark (../shared/bench/peers/run_all.sh) in the
same run, zasync's bench_zasync.py among them.

run_all.sh runs the `bench_<name>.py` found in its own folder, and that
folder is not ours to write to; so a scratch folder mirrors it with
symbolic links (run_all.sh, benchlib.py, the peers' bench and task files)
plus a link to our bench_zasync.py, and run_all.sh runs from there.
"""

import os
import re
import signal
import socket
import subprocess
import sys

from common import HERE, REPO, median, say

DEFAULT_SYSTEMS = "zasync huey celery rq dramatiq"
LINE = re.compile(r"^(\w+) enqueue_per_s=(\S+) e2e_per_s=(\S+) "
                  r"p50_latency_ms=(\S+) p95_latency_ms=(\S+)")
#: Run 2 of ../shared/bench/peers/README.md, quoted by issue 3; used for the
#: ratios when the peers are not run (--peers not given).
REFERENCE = {"huey": 1612.0, "celery": 426.0}
#: The Redis modes run_all.sh knows, and the BENCH_REDIS_DURABLE of each:
#: "plain" keeps nothing on disk (issue 3's comparison), "durable" fsyncs
#: its append-only file on every write, as a ZODB commit is fsync'd
#: (issue 19's comparison at equal durability).
REDIS_MODES = {"plain": "0", "durable": "1"}


def peers_dir():
    """The peers' folder: $PEERS_DIR, or shared/bench/peers beside the clone."""
    found = os.environ.get("PEERS_DIR") or os.path.join(
        os.path.dirname(REPO), "shared", "bench", "peers")
    return os.path.abspath(found)


def peers_python():
    return os.path.join(os.environ.get("PEERS_VENV", "/tmp/peers-venv"), "bin", "python")


def _run(argv, **kwargs):
    say("running: " + " ".join(argv))
    return subprocess.run(argv, **kwargs)


def ensure_venv(folder):
    """Create the peers' venv with their setup.sh if it is missing, and
    install this checkout of zasync into it (pip install -e) if it cannot
    import zasync."""
    python = peers_python()
    if not os.path.exists(python):
        say("the peers' venv is missing: running their setup.sh (a few minutes)")
        if _run(["bash", os.path.join(folder, "setup.sh")], stdout=sys.stderr).returncode:
            raise RuntimeError("the peers' setup.sh failed")
    probe = subprocess.run([python, "-c", "import zasync, ZEO"], capture_output=True)
    if probe.returncode:
        say("zasync is not installed in the peers' venv: installing this checkout")
        if _run([python, "-m", "pip", "install", "--quiet", "-e", REPO],
                stdout=sys.stderr).returncode:
            raise RuntimeError(f"pip install -e {REPO} into {python} failed")


def mirror(folder, target):
    """Fill `target` with links to the peers' files and to bench_zasync.py."""
    for name in sorted(os.listdir(folder)):
        if name.endswith((".py", ".sh", ".txt")):
            os.symlink(os.path.join(folder, name), os.path.join(target, name))
    os.symlink(os.path.join(HERE, "bench_zasync.py"), os.path.join(target, "bench_zasync.py"))
    return os.path.join(target, "run_all.sh")


def parse(text):
    """{system: {metric: float or None, 'error': ...}} from result lines."""
    found = {}
    for line in text.splitlines():
        match = LINE.match(line)
        if not match:
            continue
        values = [None if v == "NA" else float(v) for v in match.groups()[1:]]
        found[match.group(1)] = dict(zip(
            ("enqueue_per_s", "e2e_per_s", "p50_latency_ms", "p95_latency_ms"), values))
        found[match.group(1)]["line"] = line.strip()
    return found


def free_port():
    """A loopback port nobody listens on now, for our own Redis: run_all.sh
    uses whatever Redis already answers on its port, durable or not, so a
    shared default port could measure the wrong mode."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(scratch, cfg):
    """Run run_all.sh `cfg.peer_repeats` times per Redis mode of
    cfg.redis_modes, the modes interleaved; return ({mode: {system:
    medians}}, {mode: [raw text of each run]}).

    zasync's own bench_zasync.py uses no Redis, so it runs in the first
    mode only: running it again would only measure the same thing twice.
    """
    folder = peers_dir()
    if not os.path.exists(os.path.join(folder, "run_all.sh")):
        raise RuntimeError(f"no run_all.sh in {folder} (set PEERS_DIR)")
    ensure_venv(folder)
    script = mirror(folder, scratch.folder("peers"))
    runs, texts = {}, {}
    for repeat in range(cfg.peer_repeats):
        for index, mode in enumerate(cfg.redis_modes):
            systems = cfg.peer_systems.split()
            if index:
                systems = [s for s in systems if s != "zasync"]
            if systems:
                found, text = _run_mode(script, folder, cfg, mode, " ".join(systems), repeat)
                runs.setdefault(mode, []).append(found)
                texts.setdefault(mode, []).append(text)
    return {mode: medians(found) for mode, found in runs.items()}, texts


METRICS = ("enqueue_per_s", "e2e_per_s", "p50_latency_ms", "p95_latency_ms")


def medians(runs):
    """{system: figures} of several run_all.sh runs: each metric's median
    over the runs that measured it, and the result line rebuilt from them
    (with the count of runs when more than one)."""
    systems = list(dict.fromkeys(system for found in runs for system in found))
    merged = {}
    for system in systems:
        mine = [found[system] for found in runs if system in found]
        figures = {}
        for metric in METRICS:
            values = [f[metric] for f in mine if f.get(metric) is not None]
            figures[metric] = median(values) if values else None
        figures["runs"] = [f.get(metric) for f in mine for metric in ("e2e_per_s",)]
        if len(mine) == 1:
            figures["line"] = mine[0]["line"]
        else:
            figures["line"] = system + "".join(
                f" {metric}={'NA' if figures[metric] is None else _fmt(figures[metric])}"
                for metric in METRICS) + (
                f"   (median of {len(mine)} runs; e2e each: "
                + ", ".join("NA" if v is None else _fmt(v) for v in figures["runs"]) + ")")
        merged[system] = figures
    return merged


def _fmt(value):
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _run_mode(script, folder, cfg, mode, systems, repeat=0):
    results = os.path.join(cfg.results_dir, "peers", mode
                           + (f"-{repeat + 1}" if cfg.peer_repeats > 1 else ""))
    os.makedirs(results, exist_ok=True)
    env = dict(os.environ, BENCH_SYSTEMS=systems, BENCH_RESULTS_DIR=results,
               BENCH_JOBS=str(cfg.jobs), BENCH_LAT_JOBS=str(cfg.lat_jobs),
               BENCH_REDIS_DURABLE=REDIS_MODES[mode], BENCH_REDIS_PORT=str(free_port()))
    # run_all.sh's budget per system is a safety net (120 s by default);
    # on a loaded machine zasync over ZEO can need more, and its end (a
    # SIGTERM to the bench's whole process group, ZEO server included)
    # leaves no result at all.
    env.setdefault("BENCH_TIMEOUT_S", str(cfg.peer_timeout))
    say(f"peers, Redis {mode}: BENCH_SYSTEMS='{systems}' "
        f"BENCH_REDIS_DURABLE={REDIS_MODES[mode]} {folder}/run_all.sh "
        f"(run from a mirror; results in {results})")
    proc = subprocess.Popen(["bash", script], env=env, stdout=subprocess.PIPE,
                            stderr=sys.stderr, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        # run_all.sh traps TERM: it stops its bench (which stops its worker)
        # and the Redis it started.
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        raise
    if proc.returncode:
        say(f"run_all.sh (Redis {mode}) exited with status {proc.returncode}")
    return parse(out), out


def reference_or_measured(peers, system, mode="plain"):
    """(e2e, source) for a peer: this run's figure on Redis `mode` if
    measured, else (plain Redis only) the reference one, else (None, why)."""
    measured = (peers or {}).get(mode, {}).get(system, {}).get("e2e_per_s")
    if measured:
        return measured, "this run"
    if mode == "plain" and system in REFERENCE:
        return REFERENCE[system], "reference run 2 of the peers' README, not this run"
    return None, f"not measured in this run on {mode} Redis"
