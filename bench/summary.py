"""The summary block printed at the end of a run: every figure, then the
ratios and targets of issue 3."""

import e2e
import storage
from peers import reference_or_measured

TARGET_E2E = 1.0          # x Huey in-process on FileStorage, x Celery over ZEO (2 workers)
TARGET_SCALE = 0.7        # large backlog / small backlog
TARGET_P50_FS_MS = 5.0
TARGET_P50_ZEO_MS = 20.0
# Issue 19: at equal durability (peers on Redis fsyncing every write).
TARGET_FS_HUEY_DURABLE = 1.5      # in-process FileStorage e2e x Huey
TARGET_ZEO_CELERY_DURABLE = 1.5   # ZEO 2 workers e2e x Celery
TARGET_ZEO_DRAMATIQ_DURABLE = 1.0  # ZEO 2 workers e2e x Dramatiq
TARGET_OF_FLOOR = 0.8             # e2e x the storage's floor
TARGET_ENQUEUE_OF_RAW = 0.9       # enqueue x the storage's raw commit rate
TARGET_DRAIN_OF_FLOOR = 0.5       # in-process drain x the FileStorage floor's drain

PEER_LINE_NAMES = {"inprocess": "zasync_fs_inprocess", "zeo1": "zasync_zeo_1worker",
                   "zeo2": "zasync_zeo_2workers"}


def num(value, spec=".0f"):
    return "n/a" if value is None else format(value, spec)


def verdict(ok):
    return "met" if ok else "NOT met"


def _raw(lines, raw, cfg):
    lines.append(f"storage limit: one small object changed per transaction, median of "
                 f"{cfg.repeats} x {cfg.raw_commits} commits")
    lines.append(f"  FileStorage (each commit fsync'd)      {num(raw['raw_fs_commits_per_s']):>7} commits/s")
    lines.append(f"  ZEO on loopback, one client             {num(raw['raw_zeo_commits_per_s']):>7} commits/s")
    if "floor_fs_e2e_per_s" not in raw:
        return
    lines.append(f"floor of any job queue kept in the storage, the peers' protocol, median of "
                 f"{cfg.repeats}: {cfg.jobs} puts of one new object into one of "
                 f"{storage.FLOOR_LANES} sets, one per transaction; then each job loaded and "
                 f"rewritten once, {storage.FLOOR_BATCH} per commit, by another client; "
                 f"no claims, history, worker start or polling")
    lines.append(f"  {'':40} {'put/s':>7} {'drain/s':>8} {'e2e/s':>7}")
    for key, title in (("floor_fs", "FileStorage, in one process"), ("floor_zeo", "ZEO on loopback")):
        lines.append(f"  {title:40} {num(raw[key + '_put_per_s']):>7} "
                     f"{num(raw[key + '_drain_per_s']):>8} {num(raw[key + '_e2e_per_s']):>7}")


def _e2e(lines, runs, cfg):
    repeats = max(r["repeats"] for r in runs.values())
    lines.append(f"end to end, the peers' protocol: {cfg.jobs} noop jobs put with no worker, "
                 f"then one worker; {cfg.lat_jobs} stamp jobs {cfg.lat_interval_ms:.0f} ms "
                 f"apart after {cfg.idle_s:.0f} s idle; median of {repeats} runs")
    lines.append(f"  {'':48} {'enqueue/s':>9} {'e2e/s':>6} {'drain/s':>7} {'1st s':>5} "
                 f"{'commits/job':>11} {'p50 ms':>7} {'p95 ms':>7}")
    for mode, r in runs.items():
        lines.append(
            f"  {e2e.MODE_TITLES[mode]:48} {num(r['enqueue_per_s']):>9} {num(r['e2e_per_s']):>6} "
            f"{num(r['drain_per_s']):>7} {num(r['first_result_after_start_s'], '.2f'):>5} "
            f"{num(r['worker_commits_per_job'], '.2f'):>11} {num(r['p50_latency_ms'], '.2f'):>7} "
            f"{num(r['p95_latency_ms'], '.2f'):>7}")
    lines.append("  (e2e runs: " + "; ".join(
        f"{mode} " + ", ".join(num(v) for v in r["e2e_per_s_runs"]) for mode, r in runs.items()) + ")")
    lines.append("integrity, all runs together")
    producer = sum(r["producer_conflicts"] or 0 for r in runs.values())
    lines.append(f"  ConflictErrors at producers' commits of puts: {producer} (must be 0)")
    if "inprocess" in runs:
        lines.append(f"  claim conflicts retried inside zasync (in-process "
                     f"Dispatcher.claim_conflicts): {runs['inprocess']['claim_conflicts']}")
    zeo = [m for m in runs if m != "inprocess"]
    if zeo:
        lines.append("  ConflictErrors the ZEO server raised to worker processes (retried "
                     "inside zasync; not merged by a resolver): " + ", ".join(
                         f"{m} {runs[m]['server_conflicts']}"
                         + (f" ({runs[m]['drain_conflicts']} in the drains, the rest "
                            f"in the latency probes)"
                            if runs[m].get("drain_conflicts") is not None else "")
                         for m in zeo))
    statuses = [s for r in runs.values() for s in r.get("worker_exit_statuses", ())]
    if statuses:
        bad = [s for s in statuses if s != 0]
        lines.append(f"  worker processes stopped by SIGTERM: {len(statuses)}, exit status "
                     + (f"not 0 for {len(bad)}: {bad}" if bad else "0 for all"))
    noop = {k: sum(r["audit"].get(k, 0) for r in runs.values()) for k in
            ("jobs", "lost", "run_twice", "failed", "wrong_result")}
    stamp = {k: sum(r["stamp_audit"].get(k, 0) for r in runs.values()) for k in
             ("jobs", "lost", "run_twice", "failed")}
    lines.append(f"  jobs lost: {noop['lost'] + stamp['lost']}, run twice: "
                 f"{noop['run_twice'] + stamp['run_twice']}, failed or wrong result: "
                 f"{noop['failed'] + noop['wrong_result'] + stamp['failed']} "
                 f"(of {noop['jobs']} noop and {stamp['jobs']} stamp jobs, each read back: "
                 f"completed, attempt_count 1, one start, result == argument)")


def _scale(lines, s):
    lines.append(f"scale: FileStorage, {s['small_jobs']:,} vs {s['large_jobs']:,} pending jobs; "
                 f"median of {s['rounds']} rounds of {s['ops_per_round']} ops, one per transaction")
    lines.append(f"  {'':34} {s['small_jobs']:>10,} {s['large_jobs']:>10,} {'ratio':>7}")
    lines.append(f"  {'put/s':34} {num(s['small_put_per_s']):>10} {num(s['large_put_per_s']):>10} "
                 f"{num(s['put_ratio'], '.2f'):>7}")
    lines.append(f"  {'claim/s (queue.claim of 1)':34} {num(s['small_claim_per_s']):>10} "
                 f"{num(s['large_claim_per_s']):>10} {num(s['claim_ratio'], '.2f'):>7}")
    lines.append("  (per-round ratios, whose medians these are: put " + ", ".join(
        f"{r:.2f}" for r in s["put_ratio_runs"]) + "; claim " + ", ".join(
        f"{r:.2f}" for r in s["claim_ratio_runs"]) + ")")
    lines.append(f"  {'claim of none filing the puts, ms':34} {num(s['small_drain_ms'], '.1f'):>10} "
                 f"{num(s['large_drain_ms'], '.1f'):>10}")
    lines.append(f"  large backlog built in {s['build_s']:.0f} s ({num(s['build_jobs_per_s'])} "
                 f"jobs/s in bulk); its disk use {s['large_disk_bytes'] / 1e6:,.0f} MB "
                 f"(Data.fs {s['large_fs_bytes'] / 1e6:,.0f} MB, "
                 f"{s['large_fs_bytes'] / s['large_jobs']:.0f} bytes/job); "
                 f"small {s['small_disk_bytes'] / 1e6:,.1f} MB; "
                 f"producer ConflictErrors {s['producer_conflicts']}")


def _peer_lines(lines, results):
    runs = results.get("e2e") or {}
    found = results.get("peers") or {}
    lines.append("side by side, the peers' result-line format"
                 + (" (peers measured in this run by their run_all.sh, Redis "
                    + " and ".join(found) + ")" if found else " (peers not run: add --peers)"))
    for mode, r in runs.items():
        lines.append(f"  {PEER_LINE_NAMES[mode]} enqueue_per_s={num(r['enqueue_per_s'])} "
                     f"e2e_per_s={num(r['e2e_per_s'])} p50_latency_ms={num(r['p50_latency_ms'], '.2f')} "
                     f"p95_latency_ms={num(r['p95_latency_ms'], '.2f')}")
    for redis_mode, systems in found.items():
        for system, figures in systems.items():
            suffix = ("   <- bench_zasync.py under benchlib (ZEO, 1 worker)"
                      if system == "zasync" else f"   <- Redis {redis_mode}")
            lines.append(f"  {figures['line']}{suffix}")
    if found:
        _peer_table(lines, found)


def _peer_table(lines, found):
    """The peers on each Redis mode in columns, one row per system."""
    modes = list(found)
    systems = list(dict.fromkeys(s for m in modes for s in found[m]))
    width = 33
    lines.append(f"  {'':16}" + "".join(f" {('Redis ' + m):-^{width}}" for m in modes))
    lines.append(f"  {'':16}" + f" {'enqueue/s':>9} {'e2e/s':>6} {'p50 ms':>7} {'p95 ms':>7}" * len(modes))
    for system in systems:
        row = f"  {system:16}"
        for m in modes:
            f = found[m].get(system)
            if f is None:
                row += f" {'':>9} {'':>6} {'':>7} {'':>7}"
            else:
                row += (f" {num(f['enqueue_per_s']):>9} {num(f['e2e_per_s']):>6} "
                        f"{num(f['p50_latency_ms'], '.2f'):>7} {num(f['p95_latency_ms'], '.2f'):>7}")
        lines.append(row)


def _floor(lines, r, peer, peer_name, floor):
    if floor:
        lines.append(f"    the storage's floor for a queue (above): {num(floor)}/s = "
                     f"{floor / peer:.2f} of {peer_name}; zasync reaches {r['e2e_per_s'] / floor:.2f} "
                     f"of the floor")


def _ceilings(lines, r, peer, peer_name, raw, jobs):
    """What the e2e ratio could be at most in this run, whatever the
    worker: the peers' e2e counts the enqueue, here one durable commit per
    put, and the worker's start."""
    first = r["first_result_after_start_s"]
    instant = jobs / (jobs / r["enqueue_per_s"] + first)
    text = (f"    at most, draining all at once after the first result: "
            f"{num(instant)}/s = {instant / peer:.2f} of {peer_name}")
    if raw:
        budget = jobs / peer - jobs / raw - first
        if budget > 0:
            text += (f"; with puts at the raw commit rate, matching {peer_name} needs a drain "
                     f"of {num(jobs / budget)}/s (now {num(r['drain_per_s'])})")
        else:
            text += (f"; even with puts at the raw commit rate, no drain matches {peer_name}: "
                     f"{jobs} raw commits ({jobs / raw:.1f} s) and the worker's start "
                     f"({first:.2f} s) take longer than its {jobs / peer:.1f} s")
    lines.append(text)


def _ratios(lines, results, jobs):
    runs = results.get("e2e") or {}
    raw = results.get("raw") or {}
    s = results.get("scale")
    found = results.get("peers")
    lines.append("issue 3's ratios and targets")
    if "inprocess" in runs:
        huey, source = reference_or_measured(found, "huey")
        mine = runs["inprocess"]["e2e_per_s"]
        lines.append(f"  in-process FileStorage e2e / Huey e2e: {num(mine)} / {num(huey)} = "
                     f"{mine / huey:.2f} (target >= {TARGET_E2E}: {verdict(mine / huey >= TARGET_E2E)}; "
                     f"Huey: {source})")
        _ceilings(lines, runs["inprocess"], huey, "Huey", raw.get("raw_fs_commits_per_s"), jobs)
        _floor(lines, runs["inprocess"], huey, "Huey", raw.get("floor_fs_e2e_per_s"))
    if "zeo2" in runs:
        celery, source = reference_or_measured(found, "celery")
        mine = runs["zeo2"]["e2e_per_s"]
        lines.append(f"  ZEO 2 worker processes e2e / Celery e2e: {num(mine)} / {num(celery)} = "
                     f"{mine / celery:.2f} (target >= {TARGET_E2E}: {verdict(mine / celery >= TARGET_E2E)}; "
                     f"Celery: {source})")
        _ceilings(lines, runs["zeo2"], celery, "Celery", raw.get("raw_zeo_commits_per_s"), jobs)
        _floor(lines, runs["zeo2"], celery, "Celery", raw.get("floor_zeo_e2e_per_s"))
    if s:
        for what in ("put", "claim"):
            ratio = s[f"{what}_ratio"]
            lines.append(f"  {what} rate {s['large_jobs']:,} / {s['small_jobs']:,} pending: "
                         f"{ratio:.2f} (target >= {TARGET_SCALE}: {verdict(ratio >= TARGET_SCALE)})")
    if "inprocess" in runs:
        p50 = runs["inprocess"]["p50_latency_ms"]
        lines.append(f"  p50 put-to-start in-process FileStorage: {p50:.2f} ms "
                     f"(target < {TARGET_P50_FS_MS:.0f} ms: {verdict(p50 < TARGET_P50_FS_MS)})")
    for mode in ("zeo1", "zeo2"):
        if mode in runs:
            p50 = runs[mode]["p50_latency_ms"]
            lines.append(f"  p50 put-to-start over ZEO, {e2e.MODE_TITLES[mode].split(' over')[0]}: "
                         f"{p50:.2f} ms (target < {TARGET_P50_ZEO_MS:.0f} ms: "
                         f"{verdict(p50 < TARGET_P50_ZEO_MS)})")
    if raw and runs:
        for mode, key in (("inprocess", "raw_fs_commits_per_s"), ("zeo1", "raw_zeo_commits_per_s")):
            if mode in runs and raw.get(key):
                r = runs[mode]
                lines.append(f"  against the storage ({'FileStorage' if mode == 'inprocess' else 'ZEO'} "
                             f"{raw[key]:.0f} commits/s): enqueue {r['enqueue_per_s'] / raw[key]:.2f}x, "
                             f"e2e {r['e2e_per_s'] / raw[key]:.2f}x, drain {r['drain_per_s'] / raw[key]:.2f}x")


def _ratio_line(lines, text, mine, other, target):
    if mine is None or not other:
        lines.append(f"  {text}: {num(mine)} / {num(other)} (not measured in this run)")
        return
    ratio = mine / other
    lines.append(f"  {text}: {num(mine)} / {num(other)} = {ratio:.2f} "
                 f"(target >= {target}: {verdict(ratio >= target)})")


def _durable_ratios(lines, results):
    """Issue 19's ratios: the peers on durable Redis, and the storage's
    own floor and raw commit rate, all from this run."""
    runs = results.get("e2e") or {}
    raw = results.get("raw") or {}
    found = results.get("peers") or {}
    lines.append("issue 19's ratios and targets (at equal durability: peers on Redis "
                 "fsyncing every write"
                 + ("" if "durable" in found else "; durable Redis not run: add --peers") + ")")
    if "inprocess" in runs:
        r = runs["inprocess"]
        huey, _ = reference_or_measured(found, "huey", "durable")
        _ratio_line(lines, "in-process FileStorage e2e / Huey (durable) e2e", r["e2e_per_s"],
                    huey, TARGET_FS_HUEY_DURABLE)
        _ratio_line(lines, "in-process FileStorage e2e / FileStorage floor e2e", r["e2e_per_s"],
                    raw.get("floor_fs_e2e_per_s"), TARGET_OF_FLOOR)
        _ratio_line(lines, "in-process enqueue / FileStorage raw commits", r["enqueue_per_s"],
                    raw.get("raw_fs_commits_per_s"), TARGET_ENQUEUE_OF_RAW)
        _ratio_line(lines, "in-process drain / FileStorage floor drain", r["drain_per_s"],
                    raw.get("floor_fs_drain_per_s"), TARGET_DRAIN_OF_FLOOR)
    if "zeo2" in runs:
        r = runs["zeo2"]
        for system, target in (("celery", TARGET_ZEO_CELERY_DURABLE),
                               ("dramatiq", TARGET_ZEO_DRAMATIQ_DURABLE)):
            peer, _ = reference_or_measured(found, system, "durable")
            _ratio_line(lines, f"ZEO 2 worker processes e2e / {system.capitalize()} (durable) e2e",
                        r["e2e_per_s"], peer, target)
        _ratio_line(lines, "ZEO 2 worker processes e2e / ZEO floor e2e", r["e2e_per_s"],
                    raw.get("floor_zeo_e2e_per_s"), TARGET_OF_FLOOR)
    for mode in ("zeo1", "zeo2"):
        if mode in runs:
            _ratio_line(lines, f"{mode} enqueue / ZEO raw commits", runs[mode]["enqueue_per_s"],
                        raw.get("raw_zeo_commits_per_s"), TARGET_ENQUEUE_OF_RAW)
            break


def report(facts, results, cfg):
    rule = "=" * 100
    lines = [rule, f"zasync bench  {facts['started_at']}  {facts['host']}",
             f"source {facts['source']}  argv: {' '.join(facts['argv']) or '(defaults)'}", rule]
    if "raw" in results:
        _raw(lines, results["raw"], cfg)
    if results.get("e2e"):
        _e2e(lines, results["e2e"], cfg)
    if "scale" in results:
        _scale(lines, results["scale"])
    if results.get("e2e") or results.get("peers"):
        _peer_lines(lines, results)
    _ratios(lines, results, cfg.jobs)
    _durable_ratios(lines, results)
    if "error" in results:
        lines.append(f"ERROR: {results['error']} (figures above are those measured before it)")
    load = " -> ".join("/".join(f"{x:.1f}" for x in facts[k])
                       for k in ("loadavg_at_start", "loadavg_at_end"))
    lines.append(f"wall time {facts['wall_s']:.0f} s; load average (1/5/15 min) {load}; "
                 f"results in {cfg.results_dir}")
    waits = facts.get("waits")
    if waits:
        lines.append("waited for a quiet machine (--wait-load): " + ", ".join(
            f"{name} {w['waited_s']} s (then load {w['load_1min']:.1f})" for name, w in waits.items()))
    lines.append(rule)
    return "\n".join(lines)
