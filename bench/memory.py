"""Peak resident memory of a block of code, on Linux without a sampling thread.

Writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark ``VmHWM`` to the
current RSS; after the block, ``VmHWM − RSS before`` is the peak *increase* of resident memory
(torch's and numpy's native allocations included, which tracemalloc would miss). Where that
file is not writable, fall back to the ``ru_maxrss`` delta, which only sees growth past the
process's earlier peak.
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


@contextmanager
def peak_memory():
    """``with peak_memory() as p: …`` then ``p.mb`` (MiB) and ``p.how``."""
    p = Peak()
    if _reset_hwm() and _status_kb("VmRSS") is not None:
        before = _status_kb("VmRSS")
        yield p
        p.mb = max(0, (_status_kb("VmHWM") or before) - before) / 1024.0
        p.how = "VmHWM−RSS (clear_refs)"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield p
        p.mb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
        p.how = "ru_maxrss delta"
