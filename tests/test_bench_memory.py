"""bench/memory: the peak increase of resident memory of a block, and the phase it happened in."""
from __future__ import annotations

import numpy as np
import pytest

from bench.memory import _reset_hwm, peak_memory


@pytest.mark.skipif(not _reset_hwm(), reason="/proc/self/clear_refs is not writable here: no per-phase peaks")
def test_the_peak_is_the_largest_phase_and_names_it():
    with peak_memory() as p:
        p.phase("small")
        a = np.ones(4_000_000)                    # 31 MiB, touched
        del a
        p.phase("big")
        b = np.ones(32_000_000)                   # 244 MiB
        del b
        p.phase("after")
        c = np.ones(1000)
    assert p.at == "big"
    assert 244 * 0.9 <= p.mb <= 244 + 64
    assert c.sum() == 1000
