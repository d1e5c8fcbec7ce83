"""The interpreter settings a running worker needs: fewer young-generation collections, a
shorter GIL switch interval; restored once the last running worker stops."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

# The young generation is collected after this many net allocations instead of CPython's 700.
# A claim of a thousand events allocates objects that live until their request is answered: at
# 700 the collector ran many times per request and promoted every in-flight event to the older
# generations. Garbage without cycles is freed at once either way; this only delays finding
# cycles.
GC_YOUNG_THRESHOLD = 50_000
# A thread waiting for the GIL asks for it after this long instead of CPython's 5 ms: the
# database thread needs the GIL back after every SQLite statement, and while the loop builds
# events each such wait would otherwise take up to the full interval.
SWITCH_INTERVAL_S = 0.0005


class _Saved:
    """The settings to restore once the last running worker stops (runs may overlap)."""

    running = 0
    gc_threshold: tuple[int, int, int] = gc.get_threshold()
    switch_interval = sys.getswitchinterval()


@contextlib.contextmanager
def tuned_interpreter() -> Iterator[None]:
    """GC_YOUNG_THRESHOLD and SWITCH_INTERVAL_S while the block runs."""
    if _Saved.running == 0:
        _Saved.gc_threshold = gc.get_threshold()
        _Saved.switch_interval = sys.getswitchinterval()
        young, *older = _Saved.gc_threshold
        gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
        sys.setswitchinterval(min(_Saved.switch_interval, SWITCH_INTERVAL_S))
    _Saved.running += 1
    try:
        yield
    finally:
        _Saved.running -= 1
        if _Saved.running == 0:
            gc.set_threshold(*_Saved.gc_threshold)
            sys.setswitchinterval(_Saved.switch_interval)
