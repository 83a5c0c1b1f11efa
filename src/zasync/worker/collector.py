"""Python's cyclic garbage collector, tuned for a `zasync worker` process.

A drain of short jobs makes many small objects that live a transaction
(pickles, states, events) and keeps many that live long: the code, and
the connections' object caches.  A worker process, which runs nothing but
its jobs, freezes what its start-up made (modules, functions, the opened
database and its caches so far: none of it is garbage), so that no
collection walks those objects again (`gc.freeze`).  The gain is small:
in a drain of 3,000 no-op jobs (`bench/cost.py --worker-gc`, six runs
each way, alternating) the collections' CPU went from 20 to 18 us a job,
medians, within the noise of a loaded machine; most of it is young
collections, which the freeze does not shorten.  Rejected: young
collections rarer than CPython's default (every 700 allocations): 2,000
or 10,000 ran a third or a twentieth as many collections, each longer,
for no less time in all.

Only ``zasync worker`` calls it.  A `zasync.Dispatcher` run inside an
application leaves the application's collector as it is.
"""

import gc


def tune_for_worker():
    """Collect once, then freeze the objects that survived (start-up's)."""
    gc.collect()
    gc.freeze()
