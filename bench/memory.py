"""Peak resident memory of a block of code, on Linux without a sampling thread.

Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark ``VmHWM`` to the
current RSS; after the block, ``VmHWM − RSS before`` is the peak *increase* of resident memory
(torch's and numpy's native allocations included, which tracemalloc would miss). Where that
file is not writable, fall back to the ``ru_maxrss`` delta, which only sees growth past the
process's earlier peak. ``Peak.phase(name)`` (called from a progress callback) closes the
current phase: with ``clear_refs`` each phase's peak is read and the mark reset, so ``p.at`` names
the phase in which the whole block peaked.
"""
from __future__ import annotations

import resource
from contextlib import contextmanager


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class Peak:
    mb: float = 0.0
    how: str = ""
    at: str = ""            # the phase at the peak ("" without phases or without clear_refs)

    def __init__(self, before_kb: int | None = None):
        self._before, self._top_kb, self._current = before_kb, 0, "start"

    def phase(self, name: str) -> None:
        """End the current phase (its peak counted), start ``name``."""
        if self._before is not None:
            self._close()
            _reset_hwm()
        self._current = name

    def _close(self) -> None:
        hwm = _status_kb("VmHWM") or self._before
        if hwm > self._top_kb:
            self._top_kb, self.at = hwm, self._current


@contextmanager
def peak_memory():
    """``with peak_memory() as p: …`` then ``p.mb`` (MiB), ``p.how`` and ``p.at``."""
    if _reset_hwm() and _status_kb("VmRSS") is not None:
        before = _status_kb("VmRSS")
        p = Peak(before)
        yield p
        p._close()
        p.mb = max(0, p._top_kb - before) / 1024.0
        p.how = "VmHWM−RSS (clear_refs)"
    else:
        p = Peak()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield p
        p.mb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
        p.how = "ru_maxrss delta"
