"""The garbage collector of a `zasync worker` process (zasync.worker.collector).

Each check runs in a process of its own: a frozen object stays frozen for
the life of its process, and pytest's must not be changed.
"""

import subprocess
import sys
import textwrap


def run_python(code):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_start_up_objects_are_frozen_and_later_garbage_is_collected():
    frozen, collected = run_python("""
        import gc, weakref
        from zasync.worker import collector

        class Node:
            pass

        collector.tune_for_worker()
        frozen = gc.get_freeze_count()
        # a cycle made after start-up is garbage a collection finds
        a, b = Node(), Node()
        a.other, b.other = b, a
        seen = weakref.ref(a)
        del a, b
        gc.collect()
        print(frozen, seen() is None)
    """)
    assert int(frozen) > 0
    assert collected == "True"


def test_garbage_made_before_start_up_is_collected_first():
    # frozen garbage would never be freed: the freeze collects first
    assert run_python("""
        import gc, weakref
        from zasync.worker import collector

        class Node:
            pass

        a, b = Node(), Node()
        a.other, b.other = b, a
        seen = weakref.ref(a)
        del a, b
        collector.tune_for_worker()
        print(seen() is None)
    """) == ["True"]
