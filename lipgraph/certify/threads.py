"""One torch thread around LAPACK-heavy work on shared cores.

Intra-op threads thrash in LAPACK's eigensolvers and small SVDs when the cores are shared
(measured on the 2-core machine under load: one 64×64 SVD 95 ms vs 0.5 ms; ``eigvalsh`` of
four 512×512 complex Gram matrices 10 s vs 0.3 s), while one thread loses little on an idle
machine (these calls are mostly level-2 BLAS).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

import torch


@contextmanager
def one_thread():
    """``with one_thread(): …`` runs the block with one torch thread, restoring the count after."""
    prev = torch.get_num_threads()
    if prev != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if prev != 1:
            torch.set_num_threads(prev)


def single_threaded(fn):
    """Decorator form of ``one_thread``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return wrapper
