"""Time and memory budgets of one analysis (``--time-limit``, ``--memory-limit``).

The pipeline activates the budget for the whole analysis (``with budget.active(...)``); the
long loops (power iteration and Lanczos, SeqLip enumeration and branch and bound, LipSDP
iterations, the lower-bound search, the onnxruntime guard) ask ``expired()`` and stop where
they are, or call ``check()``, which raises ``TimeUp`` to abandon the pass that is running.
``TimeUp`` is a ``BaseException`` so that no ``except Exception`` fallback swallows it.

Large allocations (materialised operators, FFT grids, enumeration tables, LipSDP matrices) ask
``fits(nbytes)`` before they are made; beyond the limit the caller takes a cheaper route or
skips the step, with a ``memory-limit`` note. The default limit is ``MEMORY_FRACTION`` of the
machine's physical memory.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import time
from dataclasses import dataclass, field

#: Share of physical memory one allocation may take by default.
MEMORY_FRACTION = 0.5


class TimeUp(BaseException):
    """The analysis's time limit passed: the running pass is abandoned (a partial result)."""


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_memory_limit() -> int:
    return int(MEMORY_FRACTION * physical_memory())


@dataclass(frozen=True)
class Budget:
    deadline: float = math.inf          # time.monotonic() at which the analysis must stop
    memory: int = 0                     # bytes one allocation may take; 0: the default
    notes: list[str] = field(default_factory=list, compare=False)   # what the memory guard did

    @classmethod
    def start(cls, seconds: float | None, memory: int | None) -> "Budget":
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        return cls(deadline, memory or default_memory_limit())


_CURRENT: contextvars.ContextVar[Budget] = contextvars.ContextVar("lipgraph_budget", default=Budget())


@contextlib.contextmanager
def active(b: Budget):
    token = _CURRENT.set(b)
    try:
        yield b
    finally:
        _CURRENT.reset(token)


def current() -> Budget:
    return _CURRENT.get()


def expired() -> bool:
    return time.monotonic() >= _CURRENT.get().deadline


def remaining() -> float:
    return _CURRENT.get().deadline - time.monotonic()


def check() -> None:
    if expired():
        raise TimeUp


def memory_limit() -> int:
    return _CURRENT.get().memory or default_memory_limit()


def fits(nbytes: float, what: str = "", fallback: str = "") -> bool:
    """Whether one allocation of ``nbytes`` is within the memory limit; when it is not and
    ``what`` names it, a note says what was not allocated and what is done instead."""
    ok = nbytes <= memory_limit()
    if not ok and what:
        _CURRENT.get().notes.append(f"{what} would take {nbytes / 2**20:.4g} MiB, over the memory limit "
                                    f"({memory_limit() / 2**20:.4g} MiB): {fallback}")
    return ok
